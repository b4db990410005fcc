"""Applying an adapted artifact to new inputs (``adaptlab predict``): texts, or rows of a JSONL file rendered
through the artifact's own input template."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptlab.data.example import RAW_INPUT_FIELD, Example
from adaptlab.data.templates import template_fields
from adaptlab.errors import DataError
from adaptlab.strategies import ModelBinder, Prediction, load_adapted, read_artifact_json


def read_input_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (one JSON object a line)."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read input file: {e.strerror}", file=path) from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", file=path, line=i) from None
        if not isinstance(row, dict):
            raise DataError("each line must be a JSON object", file=path, line=i)
        rows.append(row)
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
    fields rendered through the artifact's input template (a row's ``id``/``idx`` becomes the prediction id).
    """
    field = single_input_field(read_artifact_json(adapted_dir))
    adapted = load_adapted(adapted_dir, binder)
    examples = [Example(id=f"text:{i + 1}", fields={field or RAW_INPUT_FIELD: t}, source="<text>", line=i + 1)
                for i, t in enumerate(texts)]
    for i, row in enumerate(rows):
        rid = row.get("id", row.get("idx", f"input:{i + 1}"))
        examples.append(Example(id=str(rid), fields=dict(row), source="<input>", line=i + 1))
    if not examples:
        return []
    return adapted.predict(examples, progress=progress)
