"""Reading a task's data: files (JSONL, CSV, TSV, label_text, text, parallel text, Hugging Face
datasets) into `Example`s, carving missing dev/test splits, and nested stratified training subsets.

Every malformed row raises `DataError` naming the file, the line and the reason; pass an ``errors``
list to `read_source` to collect them instead (``adaptlab validate`` does).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import html
import io
import json
import logging
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError, ConfigError, DataError

if TYPE_CHECKING:
    from adaptlab.tasks import SourceSpec, Task

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
DEFAULT_DEV_FRACTION = 0.1
DEFAULT_DEV_MAX = 500
ID_FIELDS = ("id", "idx")
"""A row's own id is taken from the first of these fields it has."""


@dataclass(frozen=True)
class Example:
    """One row of a split. ``fields`` feed the task's templates; ``source``/``line`` locate it."""

    id: str
    """Stable: the row's own ``id``/``idx`` field if any, else ``"<split>:<line>"``."""
    fields: Mapping[str, Any] = field(hash=False)
    source: str
    """File the row came from (or the Hugging Face dataset name)."""
    line: int
    """1-based line in the file where the row starts (row number for Hugging Face datasets)."""


@dataclass
class Splits:
    """The three splits of a task after carving."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]

    def __getitem__(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise KeyError(split)
        return getattr(self, split)

    def items(self) -> list[tuple[str, list[Example]]]:
        return [(s, getattr(self, s)) for s in SPLITS]


def normalize_label(value: Any) -> str:
    """A label value as a label key: booleans -> "true"/"false", 1.0 -> "1", strings stripped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# ------------------------------------------------------------------------------------------------
# Text cleaning
# ------------------------------------------------------------------------------------------------

# Entities whose "&" was replaced by a space (AG News: "It #39;s", " quot;Hi quot;"); named ones are
# limited to common entities so ordinary words followed by ";" are left alone.
_MANGLED_NAMES = ("quot|amp|lt|gt|apos|nbsp|hellip|mdash|ndash|lsquo|rsquo|ldquo|rdquo|laquo|raquo"
                  "|euro|pound|yen|cent|copy|reg|trade|deg|middot|bull")
_MANGLED_ENTITY = re.compile(rf"(?:^| )(#\d{{1,5}}|#[xX][0-9a-fA-F]{{1,4}}|(?:{_MANGLED_NAMES}));")
_REAL_ENTITY = re.compile(r"&(#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_BACKSLASH_DOLLAR = re.compile(r"\\+\$")
_BACKSLASHES = re.compile(r"\\+")


def _unescape(match: re.Match[str]) -> str:
    return html.unescape(f"&{match.group(1)};")  # also maps cp1252 refs (#151 -> em dash)


def clean_text(text: str, steps: Sequence[str]) -> str:
    """Apply cleaning steps in order: ``html`` repairs HTML entities (also AG News's form where
    "&" became a space: " #39;" -> "'"), ``backslashes`` turns AG News's "\\" line breaks into
    spaces (and "\\$" into "$"), ``whitespace`` collapses runs of whitespace and strips."""
    for step in steps:
        if step == "html":
            if ";" in text:  # fast path: most rows hold no entity
                text = _REAL_ENTITY.sub(_unescape, _MANGLED_ENTITY.sub(_unescape, text))
        elif step == "backslashes":
            if "\\" in text:
                text = _BACKSLASHES.sub(" ", _BACKSLASH_DOLLAR.sub("$", text))
        elif step == "whitespace":
            text = " ".join(text.split())
        else:  # the task model validates steps; this guards direct calls
            raise ConfigError(f"unknown clean step '{step}'", field="clean")
    return text


# ------------------------------------------------------------------------------------------------
# Readers: each yields (line, row) and reports malformed rows through `_Problems`
# ------------------------------------------------------------------------------------------------

class _Problems:
    """Raise the first malformed-row error, or collect all of them into ``sink``."""

    def __init__(self, sink: list[DataError] | None) -> None:
        self.sink = sink

    def __call__(self, err: DataError) -> None:
        if self.sink is None:
            raise err
        self.sink.append(err)


def read_text(path: Path, encoding: str | None = None, *, field_name: str | None = None) -> str:
    """A file's text; ``.gz`` files are decompressed. Undecodable bytes raise a DataError that
    names the line and suggests the ``encoding`` option."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=path, field=field_name,
                        hint="relative paths resolve against the task file's folder") from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", file=path, field=field_name) from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"not a valid gzip file: {exc}", file=path, field=field_name) from None
    enc = encoding or "utf-8"
    if codecs.lookup(enc).name == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode(enc)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        suggestion = "latin-1" if enc.replace("_", "-").lower() in ("utf-8", "utf8") else "utf-8"
        raise DataError(
            f"cannot decode byte 0x{raw[exc.start]:02x} (byte {col} of line {line}) as {enc}",
            file=path, line=line, field="encoding",
            hint=f"set the file's encoding on its data source, e.g. `encoding: {suggestion}`",
        ) from None


def _lines(text: str) -> list[str]:
    """Lines split on "\\n" only (str.splitlines also splits on \\x1c, \\u2028, ... inside rows)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _read_jsonl(text: str, path: Path, spec: SourceSpec, bad: _Problems) -> Iterator[tuple[int, dict]]:
    for i, raw in enumerate(_lines(text), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad(DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=i))
            continue
        except (ValueError, RecursionError) as exc:  # e.g. too deeply nested, huge integers
            bad(DataError(f"invalid JSON: {exc}", file=path, line=i))
            continue
        if not isinstance(obj, dict):
            bad(DataError(f"expected a JSON object, found {type(obj).__name__}", file=path, line=i,
                          hint="JSONL holds one object per line"))
            continue
        yield i, obj


def _read_delimited(text: str, path: Path, spec: SourceSpec, bad: _Problems,
                    delimiter: str) -> Iterator[tuple[int, dict]]:
    has_header = spec.header if spec.header is not None else spec.columns is None
    names: list[str] | None = list(spec.columns) if spec.columns else None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1  # first line of the next record (records may span lines inside quotes)
    seen_header = False
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            bad(DataError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}",
                          file=path, line=start))
            return  # the reader cannot resynchronise reliably after a csv.Error
        line, start = start, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        if has_header and not seen_header:
            seen_header = True
            if names is None:
                names = [cell.strip() for cell in row]
            elif len(names) != len(row):
                raise ConfigError(f"`columns` names {len(names)} columns but the header has {len(row)}",
                                  file=path, line=line, field="columns")
            continue
        if names is None:
            raise ConfigError("this file has no header: name its columns with `columns: [...]`",
                              file=path, field="columns")
        if len(row) != len(names):
            bad(DataError(f"expected {len(names)} columns ({', '.join(names)}), found {len(row)}",
                          file=path, line=line))
            continue
        yield line, dict(zip(names, row, strict=True))


def _read_label_text(text: str, path: Path, spec: SourceSpec, bad: _Problems) -> Iterator[tuple[int, dict]]:
    for i, raw in enumerate(_lines(text), 1):
        if not raw.strip():
            continue
        parts = raw.strip().split(None, 1)
        if len(parts) < 2:
            bad(DataError("expected '<label> <text>'", file=path, line=i))
            continue
        yield i, {"label": parts[0], "text": parts[1]}


def _read_plain(text: str, path: Path, spec: SourceSpec, bad: _Problems) -> Iterator[tuple[int, dict]]:
    for i, raw in enumerate(_lines(text), 1):
        if raw.strip():
            yield i, {"text": raw}


_READERS: dict[str, Callable[..., Iterator[tuple[int, dict]]]] = {
    "jsonl": _read_jsonl,
    "csv": lambda *a: _read_delimited(*a, delimiter=","),
    "tsv": lambda *a: _read_delimited(*a, delimiter="\t"),
    "label_text": _read_label_text,
    "text": _read_plain,
}


def _read_parallel(task: Task, spec: SourceSpec, where: str) -> tuple[str, Iterator[tuple[int, dict]]]:
    """Line-aligned files, one per field (e.g. en/de): row i has each file's line i."""
    columns: dict[str, list[str]] = {}
    paths = {name: task.resolve_path(p) for name, p in (spec.parallel or {}).items()}
    for name, path in paths.items():
        columns[name] = _lines(read_text(path, spec.encoding, field_name=f"{where}.parallel.{name}"))
    counts = {name: len(lines) for name, lines in columns.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{paths[n].name}: {c}" for n, c in counts.items())
        raise DataError(f"parallel files have different line counts ({detail})",
                        file=next(iter(paths.values())), field=f"{where}.parallel")
    names = list(columns)
    n = counts[names[0]] if names else 0
    rows = ((i + 1, {name: columns[name][i] for name in names}) for i in range(n))
    return str(next(iter(paths.values()))), rows


def _read_hf(task: Task, spec: SourceSpec, split: str, where: str) -> tuple[str, Iterator[tuple[int, dict]]]:
    """A Hugging Face dataset: a hub name (needs internet), a builder such as ``json`` with
    ``data_files``, or a local folder written by ``save_to_disk``."""
    import datasets  # deferred: heavy

    name = spec.hf or spec.path or ""
    local = task.resolve_path(name)
    hf_split = spec.split or ("train" if spec.data_files else split)
    try:
        if local.is_dir() and any((local / f).exists() for f in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if hf_split not in ds:
                    raise DataError(f"dataset has no split '{hf_split}'", file=local, field=f"{where}.split",
                                    hint="available: " + ", ".join(ds))
                ds = ds[hf_split]
        else:
            files = spec.data_files
            if files is not None:
                files = ([str(task.resolve_path(f)) for f in files] if isinstance(files, list)
                         else str(task.resolve_path(files)))
            target = str(local) if local.exists() else name
            ds = datasets.load_dataset(target, spec.subset, split=hf_split, data_files=files)
    except AdaptlabError:
        raise
    except Exception as exc:  # datasets raises many types (network, missing config, bad files)
        raise DataError(f"cannot load Hugging Face dataset '{name}': {type(exc).__name__}: {exc}",
                        field=f"{where}.hf", file=task.source,
                        hint="hub datasets need internet; offline, use a local folder or data_files") from None
    return name, ((i, dict(row)) for i, row in enumerate(ds, 1))


def read_source(task: Task, split: str, *, errors: list[DataError] | None = None) -> list[Example]:
    """The examples of ``split``'s own source (no carving). Malformed rows raise `DataError`,
    or are appended to ``errors`` and skipped when a list is given."""
    spec = task.data.source(split)
    where = f"data.{split}"
    if spec is None:
        raise ConfigError(f"task '{task.name}' has no {split} source", file=task.source, field=where)
    fmt = task.data.format_of(split)
    bad = _Problems(errors)
    if fmt == "hf":
        source, rows = _read_hf(task, spec, split, where)
    elif spec.parallel:
        source, rows = _read_parallel(task, spec, where)
    else:
        path = task.resolve_path(spec.path or "")
        text = read_text(path, spec.encoding, field_name=where)
        source, rows = str(path), _READERS[fmt](text, path, spec, bad)
    label_field = task.label_field if task.type == "classification" else None
    label_map = spec.label_map or {}
    steps = spec.clean or []
    examples = []
    for line, row in rows:
        if steps:
            row = {k: clean_text(v, steps) if isinstance(v, str) else v for k, v in row.items()}
        if label_map and label_field and row.get(label_field) is not None:
            raw = normalize_label(row[label_field])
            row[label_field] = label_map.get(raw, row[label_field])
        own_id = next((row[k] for k in ID_FIELDS if row.get(k) is not None), None)
        ex_id = str(own_id) if own_id is not None else f"{split}:{line}"
        examples.append(Example(id=ex_id, fields=row, source=source, line=line))
    logger.debug("read %d %s examples from %s", len(examples), split, source)
    return examples


# ------------------------------------------------------------------------------------------------
# Stratified orders, carving and nested subsets
# ------------------------------------------------------------------------------------------------

def stratified_order(examples: Sequence[Example], *, seed: int | str,
                     label_of: Callable[[Example], Any] | None = None) -> list[Example]:
    """A seeded permutation whose every prefix keeps the class proportions, without ``label_of``
    a seeded shuffle. It starts with one example of every class (so a prefix of length >= the
    number of classes holds them all), then always takes the class furthest below its share; a
    prefix in which every class's share is at least one example has each class within one example
    of its share (checked by a property test)."""
    rng = random.Random(seed)
    if label_of is None:
        order = list(examples)
        rng.shuffle(order)
        return order
    groups: dict[Any, list[Example]] = {}
    for ex in examples:
        groups.setdefault(label_of(ex), []).append(ex)
    for members in groups.values():
        rng.shuffle(members)
    classes = sorted(groups, key=str)
    rng.shuffle(classes)  # seeded class order: first round and tie-breaks
    total = len(examples)
    taken = dict.fromkeys(classes, 0)
    order: list[Example] = []
    for c in classes:  # one of every class first
        order.append(groups[c][0])
        taken[c] = 1
    sizes = {c: len(groups[c]) for c in classes}
    while len(order) < total:
        k = len(order) + 1
        # the class furthest behind its quota k * share (scaled by total to stay in integers)
        best = max((c for c in classes if taken[c] < sizes[c]), key=lambda c: k * sizes[c] - taken[c] * total)
        order.append(groups[best][taken[best]])
        taken[best] += 1
    return order


def nested_subsets(examples: Sequence[Example], sizes: Iterable[int | str], *, seed: int | str,
                   label_of: Callable[[Example], Any] | None = None) -> dict[int | str, list[Example]]:
    """Nested training subsets (16 ⊂ 64 ⊂ 256): prefixes of one seeded `stratified_order`, so
    ``subsets[16] == subsets[64][:16]``. Keys are the requested sizes; ``"all"`` gives every
    example (in the same order). A size above the number of examples raises DataError."""
    order = stratified_order(examples, seed=seed, label_of=label_of)
    out: dict[int | str, list[Example]] = {}
    for size in sizes:
        if size == "all":
            out["all"] = list(order)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(f"invalid training subset size {size!r}", field="sizes",
                              hint="use a non-negative integer or 'all'")
        if size > len(order):
            raise DataError(f"cannot draw {size} training examples: only {len(order)} available",
                            field="sizes", hint=f"use a size up to {len(order)} or 'all'")
        out[size] = order[:size]
    return out


def carve_count(size: float | None, n: int, *, default: bool = False) -> int:
    """Rows to carve out of ``n``: a fraction (< 1) or a count (>= 1); the default dev size is
    10% capped at 500."""
    if size is None:
        return min(math.ceil(DEFAULT_DEV_FRACTION * n), DEFAULT_DEV_MAX) if default else 0
    if size < 1:
        return max(1, round(size * n)) if size > 0 and n > 0 else 0
    return int(size)


def _tolerant_label(task: Task) -> Callable[[Example], Any] | None:
    if task.type != "classification":
        return None

    def label(ex: Example) -> Any:
        try:
            return task.label_of(ex)
        except AdaptlabError:
            return None  # unlabelled rows form their own stratum; validate reports them
    return label


def _carve(task: Task, pool: list[Example], size: float | None, *, what: str, seed: str,
           default: bool = False) -> tuple[list[Example], list[Example]]:
    """Split ``pool`` into (rest, carved), both in their original order."""
    n = carve_count(size, len(pool), default=default)
    if n == 0 or (size is None and n >= len(pool)):  # the default never empties a tiny train set
        return pool, []
    if n >= len(pool):
        raise ConfigError(f"{what}_size {size if size is not None else n} leaves no training examples "
                          f"(train has {len(pool)})", file=task.source, field=f"data.{what}_size")
    index = {id(ex): i for i, ex in enumerate(pool)}
    chosen = {index[id(ex)] for ex in stratified_order(pool, seed=seed, label_of=_tolerant_label(task))[:n]}
    rest = [ex for i, ex in enumerate(pool) if i not in chosen]
    carved = [ex for i, ex in enumerate(pool) if i in chosen]
    logger.info("carved %d %s examples out of %d training examples", n, what, len(pool))
    return rest, carved


def carve_splits(task: Task, loaded: Mapping[str, list[Example]], *, seed: int = 0) -> Splits:
    """Splits from the sources read (``loaded``): a missing test is carved out of train when
    ``data.test_size`` is set (seeded by ``data.seed`` only, so the test set never changes across
    runs), then a missing dev out of the rest (``data.dev_size``, default 10% capped at 500;
    seeded by ``data.seed`` and ``seed``), both stratified by label for classification."""
    spec = task.data
    train = list(loaded.get("train", []))
    dev = list(loaded.get("dev", []))
    test = list(loaded.get("test", []))
    if spec.test is None and spec.test_size and train:
        train, test = _carve(task, train, spec.test_size, what="test", seed=f"test:{spec.seed}")
    if spec.dev is None and train and spec.dev_size != 0:
        train, dev = _carve(task, train, spec.dev_size, what="dev", seed=f"dev:{spec.seed}:{seed}",
                            default=True)
    return Splits(train=train, dev=dev, test=test)


def load_splits(task: Task, *, seed: int = 0, errors: list[DataError] | None = None) -> Splits:
    """Read every configured split and carve the missing ones (see `carve_splits`).

    A configured source that holds no rows is a DataError naming it (unless ``errors`` collects)."""
    loaded = {s: read_source(task, s, errors=errors) for s in SPLITS if task.data.source(s) is not None}
    if errors is None:
        for split, rows in loaded.items():
            if not rows:
                spec = task.data.source(split)
                where = spec.hf if spec is not None and spec.hf else (
                    task.resolve_path(spec.path) if spec is not None and spec.path else task.source)
                raise DataError(f"the {split} source holds no rows", file=where, field=f"data.{split}",
                                hint="fill it, or drop the split from `data`; dev and test can be carved from train")
    return carve_splits(task, loaded, seed=seed)


def absent_labels(task: Task, examples: Sequence[Example]) -> list[str]:
    """The task's label keys that no example carries (empty for generation tasks)."""
    if task.type != "classification":
        return []
    present = set()
    for ex in examples:
        try:
            present.add(task.label_of(ex))
        except AdaptlabError:
            continue
    return [k for k in task.label_keys if k not in present]


def check_examples(task: Task, examples: Sequence[Example], split: str, *, unique_ids: bool = False) -> None:
    """Raise DataError at the first example whose label is missing or not one of the task's labels
    (classification tasks), or, with ``unique_ids``, whose id repeats an earlier example's id.

    The error names the row's file and line; `adaptlab validate` lists every such row instead."""
    if task.type == "classification":
        known = set(task.labels)
        for ex in examples:
            label = task.label_of(ex)  # DataError naming the row when the label field is missing
            if label not in known:
                raise DataError(f"{split} example {ex.id} has label '{label}', which is not one of the task's "
                                f"labels ({', '.join(task.label_keys)})", file=ex.source, line=ex.line,
                                field=task.label_field,
                                hint="add it to `labels`, map it with `label_map`, or fix the row")
    if unique_ids:
        seen: dict[str, Example] = {}
        for ex in examples:
            first = seen.setdefault(ex.id, ex)
            if first is not ex:
                raise DataError(f"duplicate {split} example id '{ex.id}' (first at {first.source}:{first.line})",
                                file=ex.source, line=ex.line, field="id",
                                hint="ids must be unique within a split; drop the id field to number rows by line")


def load_split(task: Task, split: str, *, seed: int = 0) -> list[Example]:
    """One split as `load_splits` gives it (carving when the task needs it)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'", field="split", hint="use train, dev or test")
    spec = task.data
    carving = (spec.test is None and spec.test_size) or (spec.dev is None and spec.dev_size != 0)
    if spec.source(split) is not None and not (split == "train" and carving):
        return read_source(task, split)  # a split with its own source is never changed by carving
    return load_splits(task, seed=seed)[split]


def __getattr__(name: str) -> Any:
    """`DataSpec`/`SourceSpec` live in adaptlab.tasks (the task config); re-exported lazily here."""
    if name in ("DataSpec", "SourceSpec"):
        from adaptlab import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

