"""``adaptlab init DATA``: a task file from a data file, with the choices it made explained.

It reads the rows (CSV, TSV, JSONL, Parquet; or a Hugging Face dataset name where the hub is reachable), picks
the text and label columns (or takes ``--text``/``--label``), and writes a commented task YAML: the label
mapping, a split plan (a test split carved out of a single file; dev carved from train), and an instruction for
the user to improve. The caller validates the result.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data.example import normalize_label
from adaptlab.data.sources import DATA_EXTENSIONS, read_file_rows
from adaptlab.errors import ConfigError, DataError, closest

log = logging.getLogger(__name__)

TEXT_NAMES = ("text", "sentence", "review", "content", "body", "message", "question", "utterance", "document",
              "input", "query", "comment", "tweet", "description", "title")
"""Column names taken as the input text, in order of preference."""
LABEL_NAMES = ("label", "labels", "class", "category", "intent", "target", "sentiment", "topic", "y", "gold", "tag")
"""Column names taken as the label, in order of preference."""
MAX_CLASSES = 100
SAMPLE_ROWS = 5000
"""Rows read to describe the columns (the whole file is read by the task, not here)."""


@dataclass
class ColumnStats:
    """What a column holds, over the rows read."""

    name: str
    filled: int = 0
    distinct: int = 0
    mean_chars: float = 0.0
    numeric: bool = False


@dataclass
class Scaffold:
    """A task file to write, and why it looks the way it does."""

    text: str
    label: str | None
    target: str | None
    labels: list[str]
    rows: int
    choices: list[str] = field(default_factory=list)
    """One line per choice made (which column, why)."""
    warnings: list[str] = field(default_factory=list)
    yaml: str = ""


def _stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, ColumnStats]:
    names = list(dict.fromkeys(k for row in rows for k in row))
    out = {}
    for name in names:
        values = [row.get(name) for row in rows if row.get(name) not in (None, "")]
        texts = [str(v) for v in values]
        out[name] = ColumnStats(name, len(values), len(set(texts)),
                                sum(len(t) for t in texts) / len(texts) if texts else 0.0,
                                bool(values) and all(isinstance(v, (int, float)) or _is_number(str(v)) for v in values))
    return out


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?\d+(\.\d+)?", text.strip()))


def _pick(stats: dict[str, ColumnStats], given: str | None, names: Sequence[str], what: str,
          skip: set[str]) -> str | None:
    if given is not None:
        if given not in stats:
            guess = closest(given, stats)
            raise ConfigError(f"no column '{given}'", field=f"--{what}",
                              hint=f"did you mean '{guess}'?" if guess else "columns: " + ", ".join(stats))
        return given
    lowered = {k.lower(): k for k in stats if k not in skip}
    return next((lowered[n] for n in names if n in lowered), None)


def infer_columns(rows: Sequence[Mapping[str, Any]], *, text: str | None = None, label: str | None = None,
                  target: str | None = None) -> Scaffold:
    """The text and label (or target) columns of ``rows``, each choice explained."""
    if not rows:
        raise DataError("the data holds no rows", field="DATA")
    stats = _stats(rows)
    n = len(rows)
    choices: list[str] = []
    lab = None
    if target is None:
        lab = _pick(stats, label, LABEL_NAMES, "label", set())
        if lab is not None and label is None:
            choices.append(f"label column '{lab}': its name ({stats[lab].distinct} distinct values)")
        if lab is None:
            limit = min(MAX_CLASSES, max(2, n // 3))
            candidates = [s for s in stats.values() if 2 <= s.distinct <= limit and s.mean_chars < 40]
            if not candidates:
                raise DataError("cannot tell which column holds the label", field="--label",
                                hint="pass --label COLUMN (columns: " + ", ".join(stats) + ")")
            best = min(candidates, key=lambda s: (s.distinct, s.mean_chars))
            lab = best.name
            choices.append(f"label column '{lab}': fewest distinct values ({best.distinct} over {n} rows)")
        elif label is not None:
            choices.append(f"label column '{lab}': given with --label")
    else:
        _pick(stats, target, (), "target", set())
        choices.append(f"target column '{target}': given with --target (a generation task)")
    skip = {c for c in (lab, target) if c}
    txt = _pick(stats, text, TEXT_NAMES, "text", skip)
    if txt is not None:
        choices.append(f"text column '{txt}': " + ("given with --text" if text else "its name")
                       + f" (average {stats[txt].mean_chars:.0f} characters)")
    else:
        textual = [s for s in stats.values() if s.name not in skip and not s.numeric and s.mean_chars > 0]
        if not textual:
            raise DataError("cannot tell which column holds the text", field="--text",
                            hint="pass --text COLUMN (columns: " + ", ".join(stats) + ")")
        best = max(textual, key=lambda s: s.mean_chars)
        txt = best.name
        choices.append(f"text column '{txt}': the longest text (average {best.mean_chars:.0f} characters)")
    labels = []
    warnings = []
    if lab is not None:
        counts = Counter(normalize_label(row[lab]) for row in rows if row.get(lab) not in (None, ""))
        labels = sorted(counts, key=lambda k: (-counts[k], k))
        if len(labels) > MAX_CLASSES:
            raise DataError(f"column '{lab}' has {len(labels)} distinct values: too many for labels",
                            field="--label", hint="pass --label with the column that holds the class")
        if len(labels) < 2:
            raise DataError(f"column '{lab}' holds one value only ('{labels[0] if labels else ''}')", field="--label",
                            hint="a classification task needs at least two labels")
        if stats[lab].numeric:
            warnings.append("the labels are numbers: in task.yaml, replace each verbalizer by the word the label "
                            "means (the model scores those words)")
        rare = [k for k in labels if counts[k] < 2]
        if rare:
            warnings.append(f"{len(rare)} label(s) occur once ({', '.join(rare[:5])}): too few to learn or test")
    others = [s.name for s in stats.values() if s.name not in {txt, lab, target} and not s.numeric]
    if others:
        choices.append("other columns, usable in the input template: " + ", ".join(others))
    return Scaffold(text=txt, label=lab, target=target, labels=labels, rows=n, choices=choices, warnings=warnings)


def verbalizer(label: str) -> str:
    """A first verbalizer for a label value: its words, lower case (``cancel_subscription`` -> ``cancel
    subscription``)."""
    return " ".join(re.sub(r"[_\-]+", " ", label).split()).lower() or label


def _yaml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_plan(n_rows: int, has_test: bool) -> tuple[str, list[str]]:
    """The ``data:`` lines that carve what a single file lacks, and their explanation."""
    if has_test:
        return "", ["dev: carved from train (10%, at most 500 rows)"]
    test = min(200, max(1, math.ceil(0.2 * n_rows)))
    return f"  test_size: {test}", [f"test: {test} rows carved out of the file (seeded, stratified by label); "
                                   "dev: 10% of the rest"]


def render_task_yaml(sc: Scaffold, *, name: str, sources: Mapping[str, str], origin: str) -> str:
    """The commented task YAML for ``sc``; ``sources`` maps each split to its YAML value (a quoted path relative
    to the task file, or a Hugging Face mapping)."""
    split_lines, plan = split_plan(sc.rows, "test" in sources)
    lines = [f"# Written by `adaptlab init` from {origin}. Edit freely, then run:",
             "#   adaptlab validate task.yaml && adaptlab compare task.yaml",
             *(f"# {c}" for c in sc.choices),
             *(f"# split plan: {p}" for p in plan),
             f"name: {name}",
             f"type: {'generation' if sc.target else 'classification'}"]
    if sc.target:
        lines.append(f"instruction: {_yaml_str('Write the ' + sc.target + ' for the input.')}  "
                     "# TODO: say what the model should produce")
    else:
        words = ", ".join(verbalizer(k) for k in sc.labels[:12]) + (", ..." if len(sc.labels) > 12 else "")
        lines.append(f"instruction: {_yaml_str('Classify the text as one of: ' + words + '.')}  "
                     "# TODO: describe the task in your words")
    lines.append("data:")
    lines += [f"  {split}: {value}" for split, value in sources.items()]
    if split_lines:
        lines.append(split_lines + "            # test rows carved out of train (a count, or a fraction < 1)")
    lines.append(f"input: {_yaml_str('{{ ' + sc.text + ' }}')}              # Jinja2 over a row's columns")
    if sc.target:
        lines += [f"target: {_yaml_str('{{ ' + sc.target + ' }}')}", "metric: chrf"]
        return "\n".join(lines) + "\n"
    lines += [f"label_field: {sc.label}",
              "labels:                          # label value in the data -> the word the model scores"]
    for key in sc.labels:
        lines.append(f"  {_yaml_str(key)}: {_yaml_str(verbalizer(key))}")
    lines.append("metric: accuracy                 # or macro_f1 when the classes are unbalanced")
    return "\n".join(lines) + "\n"


def sibling_splits(path: Path) -> dict[str, Path]:
    """train/dev/test files beside ``path`` when its name says train (``train.csv`` + ``test.csv``)."""
    out = {"train": path}
    if "train" not in path.name:
        return out
    for split, words in (("dev", ("dev", "valid", "validation", "val")), ("test", ("test",))):
        for word in words:
            other = path.with_name(path.name.replace("train", word))
            if other != path and other.is_file():
                out[split] = other
                break
    return out


def scaffold_file(data: Path, out: Path, *, text: str | None = None, label: str | None = None,
                  target: str | None = None) -> Scaffold:
    """The scaffold of a task for the data file ``data`` (a task file to be written at ``out``)."""
    if data.suffix.lower().removesuffix(".gz") not in DATA_EXTENSIONS and not data.name.endswith(".gz"):
        raise DataError(f"cannot tell the format of '{data.name}' from its extension", file=data,
                        hint="use a .csv, .tsv, .jsonl or .parquet file")
    rows, bad = read_file_rows(data, limit=SAMPLE_ROWS)
    sc = infer_columns(rows, text=text, label=label, target=target)
    if bad:
        sc.warnings.append(f"{len(bad)} malformed rows (first: {bad[0].one_line()}); add `on_bad_rows: skip` to "
                           "the data section to drop them")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.stem.split(".")[0]).strip("-") or "task"
    base = out.resolve().parent
    sources = {split: _yaml_str(_relative(p.resolve(), base)) for split, p in sibling_splits(data).items()}
    sc.yaml = render_task_yaml(sc, name=name, sources=sources, origin=str(data))
    return sc


def scaffold_hf(name: str, *, text: str | None = None, label: str | None = None,
                target: str | None = None) -> Scaffold:
    """The scaffold of a task for the Hugging Face dataset ``name`` (needs the hub: the caller checks it)."""
    import datasets

    try:
        splits = datasets.get_dataset_split_names(name)
        rows = [dict(r) for r in datasets.load_dataset(name, split=f"train[:{SAMPLE_ROWS}]")]
    except Exception as exc:  # noqa: BLE001 - datasets raises many types (missing dataset, configs, network)
        raise DataError(f"cannot load Hugging Face dataset '{name}': {type(exc).__name__}: {exc}", field="DATA",
                        hint="check the name (org/name); a dataset with configurations needs a task file by hand") from None
    sc = infer_columns(rows, text=text, label=label, target=target)
    if sc.label is not None and all(isinstance(r.get(sc.label), int) for r in rows[:50]):
        sc.warnings.append("the labels are class numbers: write the class names as verbalizers in the task file")
    sources = {"train": f"{{hf: {name}, split: train}}"}
    for split, names in (("dev", ("validation", "dev")), ("test", ("test",))):
        found = next((s for s in names if s in splits), None)
        if found is not None:
            sources[split] = f"{{hf: {name}, split: {found}}}"
    sc.yaml = render_task_yaml(sc, name=re.sub(r"[^A-Za-z0-9_.-]+", "-", name.split("/")[-1]), sources=sources,
                               origin=f"the Hugging Face dataset {name}")
    return sc


def _relative(path: Path, base: Path) -> str:
    try:
        import os

        return os.path.relpath(path, base)
    except ValueError:  # another drive
        return str(path)
