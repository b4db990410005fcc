"""Applying an adapted artifact to new inputs (``adaptlab predict``): texts, or rows of a JSONL file rendered
through the artifact's own input template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptlab.data.example import RAW_INPUT_FIELD, Example
from adaptlab.data.sources import read_file_rows
from adaptlab.data.templates import missing_fields, render_input, template_fields
from adaptlab.errors import DataError
from adaptlab.strategies import ModelBinder, Prediction, load_adapted, read_artifact_json


def read_input_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an input file, read by its extension: CSV, TSV, JSONL (one JSON object a line) or Parquet. A
    malformed row is a `DataError` naming its line."""
    rows, bad = read_file_rows(Path(path))
    if bad:
        raise bad[0]
    return rows


def single_input_field(adapted_json: Mapping[str, Any]) -> str | None:
    """The one field an artifact's input template uses (so a bare text renders like a data row), or None.

    With a one-field template such as ``"Review: {{ text }}"`` a ``--text`` input fills ``text``; with several
    fields (or none) the text is used verbatim as the rendered input.
    """
    task = adapted_json.get("task")
    template = task.get("input") if isinstance(task, dict) else None
    if not isinstance(template, str):
        return None
    names = sorted(template_fields(template))
    return names[0] if len(names) == 1 else None


def predict_texts(adapted_dir: str | Path, binder: ModelBinder | None = None, texts: Sequence[str] = (), *,
                  rows: Sequence[Mapping[str, Any]] = (), progress: bool = False) -> list[Prediction]:
    """Predict with the artifact in ``adapted_dir``; ``binder(model_name)`` builds a prompt artifact's LM.

    ``texts`` fill the input template's field when it has exactly one, else are used verbatim; ``rows`` are example
    fields rendered through the artifact's input template (a row's ``id``/``idx`` becomes the prediction id). Each
    prediction's ``extra["input"]`` is the input text the model saw. Rows that lack a field the template prints
    (in every row) are a `DataError`, not inputs rendered with a hole.
    """
    data = read_artifact_json(adapted_dir)
    field = single_input_field(data)
    adapted = load_adapted(adapted_dir, binder)
    examples = [Example(id=f"text:{i + 1}", fields={field or RAW_INPUT_FIELD: t}, source="<text>", line=i + 1)
                for i, t in enumerate(texts)]
    for i, row in enumerate(rows):
        rid = row.get("id", row.get("idx", f"input:{i + 1}"))
        examples.append(Example(id=str(rid), fields=dict(row), source="<input>", line=i + 1))
    if not examples:
        return []
    template = (data.get("task") or {}).get("input") if isinstance(data.get("task"), dict) else None
    if isinstance(template, str) and rows:
        row_examples = examples[len(texts):]
        missing, first = missing_fields(template, row_examples)
        absent = [name for name, n in missing.items() if n == len(row_examples)]
        if absent:
            have = ", ".join(sorted(first[absent[0]].fields))
            raise DataError(f"the artifact's input template prints field '{absent[0]}', which no input row has",
                            field=absent[0], hint=f"the input's columns: {have}; name a column '{absent[0]}'")
    predictions = adapted.predict(examples, progress=progress)
    for p, ex in zip(predictions, examples):
        p.extra.setdefault("input", render_input(template, ex) if isinstance(template, str)
                           else str(ex.fields.get(RAW_INPUT_FIELD, "")))
    return predictions
