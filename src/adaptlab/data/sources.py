"""Reading a task's data: files (JSONL, CSV, TSV, label_text, text, parallel text) and Hugging Face datasets
into `Example`s. Every malformed row raises `DataError` naming the file, the line and the reason; pass an
``errors`` list to `read_source` to collect them instead (``adaptlab validate`` does).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import html
import io
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from adaptlab.data.example import ID_FIELDS, Example, normalize_label
from adaptlab.data.task import EXTENSIONS, SourceSpec, Task
from adaptlab.data.templates import render
from adaptlab.errors import AdaptlabError, ConfigError, DataError

logger = logging.getLogger(__name__)

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


def read_bytes(path: Path, *, field_name: str | None = None) -> bytes:
    """A file's bytes; ``.gz`` files are decompressed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=path, field=field_name,
                        hint="relative paths resolve against the task file's folder") from None
    except IsADirectoryError:
        raise DataError("is a folder, not a data file", file=path, field=field_name) from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", file=path, field=field_name) from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"not a valid gzip file: {exc}", file=path, field=field_name) from None
    return raw


def detect_encoding(raw: bytes) -> str | None:
    """The encoding a detector (charset-normalizer) finds for ``raw``, or None."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a dependency of adaptlab
        return None
    matches = from_bytes(raw[:500_000])
    best = matches.best()
    if best is None:
        return None
    western = {"cp1252", "latin_1", "iso8859_1", "iso8859_15", "cp1250"}
    if best.encoding in western or any(m.encoding in western - {"cp1250"} for m in matches):
        try:  # Western single-byte text: cp1252 (a superset of latin-1 for text) is the likely one
            raw.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return best.encoding


_C1 = re.compile("[\x80-\x9f]")
"""Control characters that latin-1 gives for the bytes where cp1252 has curly quotes, dashes and the euro sign."""


def read_text(path: Path, encoding: str | None = None, *, field_name: str | None = None) -> str:
    """A file's text; ``.gz`` files are decompressed. A binary file, undecodable bytes, or latin-1 text holding C1
    control characters (a cp1252 file read as latin-1) raise a DataError naming the line and the encoding a
    detector suggests."""
    raw = read_bytes(path, field_name=field_name)
    head = raw[:8192]
    bom16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    binary = b"\x00" in head and len(head) >= 64 and controls > 0.1 * len(head)
    if binary and not bom16 and not (encoding or "").lower().startswith(("utf-16", "utf16", "utf-32")):
        raise DataError("not a text file (it holds NUL bytes): is this the data file you meant?", file=path,
                        field=field_name, hint="data files are CSV, TSV, JSONL, Parquet or plain text")
    enc = encoding or ("utf-16" if bom16 else "utf-8")
    if codecs.lookup(enc).name == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode(enc)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        found = detect_encoding(raw)
        suggestion = found if found and codecs.lookup(found).name != codecs.lookup(enc).name else "cp1252"
        raise DataError(f"cannot decode byte 0x{raw[exc.start]:02x} (byte {col} of line {line}) as {enc}",
                        file=path, line=line, field="encoding",
                        hint=f"set the file's encoding on its data source: `encoding: {suggestion}` (detected)"
                        if found else f"set the file's encoding on its data source, e.g. `encoding: {suggestion}`"
                        ) from None
    if codecs.lookup(enc).name == "iso8859-1":
        bad = _C1.search(text)
        if bad is not None:
            line = text.count("\n", 0, bad.start()) + 1
            raise DataError(f"read as {enc}, line {line} holds the control character U+{ord(bad.group()):04X} where "
                            "cp1252 has a quote, dash or euro sign", file=path, line=line, field="encoding",
                            hint="the file looks like cp1252: set `encoding: cp1252`")
    return text


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
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # one field may hold a whole long document
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


def _read_parquet(path: Path, spec: SourceSpec, bad: _Problems) -> Iterator[tuple[int, dict]]:
    """A Parquet file (through pyarrow); the row number is the line."""
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        raise DataError("reading Parquet needs pyarrow", file=path, hint="pip install pyarrow") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types for damaged files
        raise DataError(f"not a readable Parquet file: {exc}", file=path) from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield i, row


def file_rows(path: Path, fmt: str, spec: SourceSpec, bad: _Problems) -> Iterator[tuple[int, dict]]:
    """(line, row) of a data file in format ``fmt`` (not Hugging Face, not parallel files)."""
    if fmt == "parquet":
        return _read_parquet(path, spec, bad)
    return _READERS[fmt](read_text(path, spec.encoding, field_name=None), path, spec, bad)


def read_file_rows(path: Path, *, limit: int | None = None) -> tuple[list[dict[str, Any]], list[DataError]]:
    """The rows of a data file (format by extension), at most ``limit``, and the malformed rows skipped."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    fmt = EXTENSIONS.get(Path(name).suffix.lower())
    if fmt is None:
        raise DataError(f"cannot tell the format of '{path.name}' from its extension", file=path,
                        hint="use a .csv, .tsv, .jsonl or .parquet file")
    errors: list[DataError] = []
    rows = []
    for _, row in file_rows(path, fmt, SourceSpec(path=str(path)), _Problems(errors)):
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows, errors


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
    skipped: list[DataError] = []
    bad = _Problems(skipped if spec.on_bad_rows == "skip" else errors)
    if fmt == "hf":
        source, rows = _read_hf(task, spec, split, where)
    elif spec.parallel:
        source, rows = _read_parallel(task, spec, where)
    else:
        path = task.resolve_path(spec.path or "")
        try:
            source, rows = str(path), list(file_rows(path, fmt, spec, bad))
        except DataError as exc:
            if exc.line is None:  # a file-level problem (missing, unreadable): name the data key
                exc.field = exc.field or where
            raise
    label_field = task.label_field if task.type == "classification" else None
    label_map = spec.label_map or {}
    steps = spec.clean or []
    examples = []
    for line, row in rows:
        if steps:
            row = {k: clean_text(v, steps) if isinstance(v, str) else v for k, v in row.items()}
        if spec.label_transform and label_field and row.get(label_field) is not None:
            where_row = Example(id=f"{split}:{line}", fields=row, source=source, line=line)
            row[label_field] = render(spec.label_transform, {**row, "label": row[label_field]},
                                      what="label_transform", where=where_row).strip()
        if label_map and label_field and row.get(label_field) is not None:
            raw = normalize_label(row[label_field])
            row[label_field] = label_map.get(raw, row[label_field])
        own_id = next((row[k] for k in ID_FIELDS if row.get(k) is not None), None)
        ex_id = str(own_id) if own_id is not None else f"{split}:{line}"
        examples.append(Example(id=ex_id, fields=row, source=source, line=line))
    if skipped:
        lines = ", ".join(str(e.line) for e in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        logger.warning("%s: skipped %d malformed %s rows (on_bad_rows: skip), at lines %s; first: %s", source,
                       len(skipped), split, lines, skipped[0].message)
    logger.debug("read %d %s examples from %s", len(examples), split, source)
    return examples



DATA_EXTENSIONS = tuple(EXTENSIONS)
"""File extensions `read_file_rows` reads (before a ``.gz``)."""
