"""Task definitions: which data, how an example becomes input text, the labels and the metric.

A task YAML maps one to one onto `Task` (a `ConfigModel`); unknown keys and invalid values raise a one-line
`ConfigError` naming the file, the line and the field (with a 'did you mean' hint). `Task` describes its
data (`DataSpec`); `adaptlab.data.sources` reads it.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.config import ConfigModel, Invalid, load_package_file, load_yaml_model
from adaptlab.data.example import Example, normalize_label
from adaptlab.data.templates import compile_template, render, render_input, template_fields
from adaptlab.errors import ConfigError, DataError, closest

FORMATS = ("jsonl", "csv", "tsv", "parquet", "label_text", "text", "hf")
CLEAN_STEPS = ("html", "backslashes", "whitespace")
BUILTIN_TASKS = ("demo",)
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
              ".tsv": "tsv", ".tab": "tsv", ".txt": "text", ".parquet": "parquet"}
"""Data file extensions and the format each means (before a ``.gz``)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _label_dict(value: Any, what: str) -> Any:
    if value is None or not isinstance(value, Mapping):
        return value
    out = {}
    for key, verbal in value.items():
        if isinstance(verbal, Mapping | list):
            raise Invalid(f"{what} values must be strings, got {type(verbal).__name__}", field=str(key))
        out[normalize_label(key)] = normalize_label(verbal) if verbal is not None else ""
    return out


class ReadOptions(ConfigModel):
    """How to read a source; given on `DataSpec` they are defaults for every split."""

    format: Literal["jsonl", "csv", "tsv", "parquet", "label_text", "text", "hf"] | None = None
    """Inferred from the extension (.jsonl .json .csv .tsv .parquet .txt, before .gz) unless given."""
    encoding: str | None = None
    """Text encoding (default utf-8), e.g. ``cp1252`` or ``latin-1``; a file that is not utf-8 gets the encoding a
    detector finds suggested in the error."""
    columns: list[str] | None = None
    """CSV/TSV column names; without a header they name the columns, with one they rename them."""
    header: bool | None = None
    """Whether a CSV/TSV starts with a header row (default: true unless ``columns`` is given)."""
    label_map: dict[str, str] | None = None
    """Raw label -> task label key (e.g. ``{1: World}``); applied when reading, after ``label_transform``."""
    label_transform: str | None = None
    """A Jinja2 template that turns the raw label into the task's label key, over the row's fields and ``label``
    (the raw label), e.g. ``"{{ label.split(':')[0] }}"`` keeps the coarse class of ``COARSE:fine``."""
    on_bad_rows: Literal["error", "skip"] | None = None
    """A malformed row (bad JSON, a wrong number of columns, a label with no text): ``error`` (default) stops
    with the row's file and line; ``skip`` drops it and reports how many rows were dropped and where."""
    clean: list[str] | None = None
    """Text repairs applied to every string field, in order: html, backslashes, whitespace."""

    @field_validator("label_map", mode="before")
    @classmethod
    def _norm_label_map(cls, v: Any) -> Any:
        return _label_dict(v, "label_map")

    @field_validator("label_transform")
    @classmethod
    def _label_template(cls, v: str | None) -> str | None:
        if v is not None:
            compile_template(v)
        return v

    @field_validator("clean", mode="before")
    @classmethod
    def _clean_steps(cls, v: Any) -> Any:
        for step in [v] if isinstance(v, str) else v if isinstance(v, list) else []:
            if isinstance(step, str) and step not in CLEAN_STEPS:
                guess = closest(step, CLEAN_STEPS)
                raise Invalid(f"unknown clean step '{step}'",
                               hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(CLEAN_STEPS))
        return [v] if isinstance(v, str) else v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                codecs.lookup(v)
            except LookupError:
                raise Invalid(f"unknown encoding '{v}'", hint="e.g. utf-8, latin-1, cp1252") from None
        return v

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (len(set(v)) != len(v) or not all(v)):
            raise Invalid("columns must be distinct non-empty names")
        return v


_DEFAULT_KEYS = tuple(ReadOptions.model_fields)


class SourceSpec(ReadOptions):
    """Where one split's rows come from. Exactly one of ``path``, ``parallel`` or ``hf``."""

    path: str | None = None
    """A file (relative to the task file's folder); ``.gz`` is decompressed transparently."""
    parallel: dict[str, str] | None = None
    """Line-aligned text files, one per field: ``{en: train.en.gz, de: train.de.gz}``."""
    hf: str | None = None
    """Hugging Face dataset: hub name, builder name (``json``, with ``data_files``) or a local
    ``save_to_disk`` folder."""
    subset: str | None = None
    """Hugging Face configuration name (e.g. ``sst2`` of ``nyu-mll/glue``)."""
    split: str | None = None
    """Hugging Face split to read (default: this split's name, or ``train`` with data_files)."""
    data_files: str | list[str] | None = None
    """Files for a Hugging Face builder such as ``json`` or ``csv``."""

    @field_validator("path", "hf", mode="before")
    @classmethod
    def _pathlike(cls, v: Any) -> Any:
        return str(v) if isinstance(v, os.PathLike) else v

    @model_validator(mode="after")
    def _one_origin(self) -> SourceSpec:
        given = [k for k in ("path", "parallel", "hf") if getattr(self, k)]
        if len(given) != 1:
            raise Invalid("a data source needs exactly one of path, parallel or hf"
                           + (f" (got {', '.join(given)})" if given else ""))
        return self


class DataSpec(ReadOptions):
    """Per-split sources plus read options shared by all splits (overridable per split)."""

    train: SourceSpec | None = None
    """The training rows: a file (``train: train.csv``) or a source mapping."""
    dev: SourceSpec | None = None
    """Rows for checkpoint selection, calibration and prompt search; carved out of train when absent."""
    test: SourceSpec | None = None
    """The held-out rows every strategy is evaluated on; carved out of train with ``test_size`` when absent."""
    dev_size: float | None = None
    """Dev rows carved out of train when no dev source is given: a fraction (< 1) or a count;
    default 10% capped at 500; 0 means no dev split."""
    test_size: float | None = None
    """Test rows carved out of train when no test source is given (a fraction or a count)."""
    unlabeled: SourceSpec | None = None
    """Inputs without labels that a ``distill`` teacher labels (a file or a source mapping); rows need only the
    fields the input template prints. Never carved, never evaluated on."""
    seed: int = 0
    """Seed of the carving (the carved test set depends on this seed only)."""

    @field_validator("train", "dev", "test", "unlabeled", mode="before")
    @classmethod
    def _path_shorthand(cls, v: Any) -> Any:
        return {"path": str(v)} if isinstance(v, str | os.PathLike) else v

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        for name, size in (("dev_size", self.dev_size), ("test_size", self.test_size)):
            if size is not None and (size < 0 or (size >= 1 and not float(size).is_integer())):
                raise Invalid(f"{name} must be a fraction below 1 or a whole number of rows", field=name)
        if self.dev is not None and self.dev_size is not None:
            raise Invalid("dev_size only applies when no dev source is given", field="dev_size")
        if self.test is not None and self.test_size is not None:
            raise Invalid("test_size only applies when no test source is given", field="test_size")
        if self.train is None and (self.test_size or self.dev_size):
            raise Invalid("carving dev/test needs a train source", field="train")
        if self.train is None and self.test is None:
            raise Invalid("give at least a train or a test source", field="train")
        for split in ("train", "dev", "test", "unlabeled"):
            self.format_of(split)  # raises when the format cannot be inferred
        return self

    def source(self, split: str) -> SourceSpec | None:
        """The split's source with the shared defaults filled in (None if not configured)."""
        own = getattr(self, split, None)
        if own is None:
            return None
        merged = {k: getattr(self, k) for k in _DEFAULT_KEYS if getattr(self, k) is not None}
        merged.update({k: getattr(own, k) for k in own.model_fields_set if getattr(own, k) is not None})
        return SourceSpec.model_construct(**{**{k: None for k in SourceSpec.model_fields}, **merged})

    def format_of(self, split: str) -> str | None:
        """The split's format: given, ``hf``/parallel by origin, or inferred from the extension."""
        spec = self.source(split)
        if spec is None:
            return None
        if spec.hf or spec.format == "hf":
            return "hf"
        if spec.parallel:
            return "text"
        if spec.format:
            return spec.format
        path = spec.path or ""
        suffixes = Path(path[:-3] if path.endswith(".gz") else path).suffix.lower()
        if suffixes in EXTENSIONS:
            return EXTENSIONS[suffixes]
        raise Invalid(f"cannot infer the format of '{Path(path).name}' from its extension",
                       field=f"{split}.format", hint="add `format:` (one of " + ", ".join(FORMATS) + ")")


class Task(ConfigModel):
    """A task: YAML keys map one to one onto these fields (``source`` is set by `load_task`)."""

    name: str
    """Short identifier (letters, digits, ``_.-``); used in output folder names."""
    type: Literal["classification", "generation"]
    """``classification`` (score each label's verbalizer) or ``generation`` (free text, scored against ``target``)."""
    instruction: str = ""
    """What the model should do, in natural language (placed before the examples)."""
    data: DataSpec
    """Where each split's rows come from, and how to read them (see the data keys)."""
    input: str
    """Jinja2 template of the input text over an example's fields, e.g. ``"{{ text }}"``."""
    label_field: str | None = None
    """Classification: the field holding the label (default ``label``)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Classification: label key -> verbalizer, in order (keys are normalised to strings)."""
    target: str | None = None
    """Generation: Jinja2 template of the reference output, e.g. ``"{{ de }}"``."""
    metric: str
    """A name in `adaptlab.metrics.METRICS` that suits the task type."""
    source: Path | None = Field(default=None, exclude=True)
    """The YAML file; relative data paths resolve against its folder."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise Invalid(f"invalid task name '{v}'", hint="use letters, digits, '_', '.' and '-'")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _norm_labels(cls, v: Any) -> Any:
        return _label_dict(v, "labels")

    @field_validator("input", "target")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            compile_template(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> Task:
        if self.type == "classification":
            if self.label_field is None:
                self.label_field = "label"
            if len(self.labels) < 2:
                raise Invalid("a classification task needs at least two labels", field="labels",
                               hint="e.g. labels: {0: negative, 1: positive}")
            empty = [k for k, v in self.labels.items() if not v.strip()]
            if empty:
                raise Invalid(f"label '{empty[0]}' has an empty verbalizer", field="labels")
            if len(set(self.labels.values())) != len(self.labels):
                raise Invalid("two labels share a verbalizer", field="labels")
            if self.target is not None:
                raise Invalid("`target` is for generation tasks", field="target")
        else:
            if self.target is None:
                raise Invalid("a generation task needs a `target` template", field="target",
                               hint='e.g. target: "{{ de }}"')
            if self.labels or self.label_field:
                raise Invalid("labels/label_field are for classification tasks",
                               field="labels" if self.labels else "label_field")
        self._check_metric()
        return self

    def _check_metric(self) -> None:
        from adaptlab.metrics import METRICS  # light (numpy); sacrebleu is imported lazily there

        fitting = sorted(n for n, m in METRICS.items() if m.kind == self.type)
        if self.metric not in METRICS:
            guess = closest(self.metric, METRICS)
            raise Invalid(f"unknown metric '{self.metric}'", field="metric",
                           hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(fitting))
        if METRICS[self.metric].kind != self.type:
            raise Invalid(f"metric '{self.metric}' does not suit a {self.type} task", field="metric",
                           hint="use one of " + ", ".join(fitting))

    # -- behaviour --------------------------------------------------------------------------------

    @property
    def label_keys(self) -> list[str]:
        return list(self.labels)

    @property
    def verbalizers(self) -> list[str]:
        return list(self.labels.values())

    def render_input(self, ex: Example) -> str:
        """The example's input text (the ``input`` template over its fields)."""
        return render_input(self.input, ex)

    def target_of(self, ex: Example) -> str:
        """Generation: the reference output; classification: the gold verbalizer."""
        if self.target is not None:
            return render(self.target, ex.fields, what="target", where=ex)
        return self.labels.get(self.label_of(ex), "")

    def label_of(self, ex: Example) -> str:
        """The example's label key (str; per-split label maps are applied when reading). It may be
        outside `labels` on bad data: `adaptlab validate` reports that. No label: DataError."""
        if self.label_field is None:
            raise ConfigError(f"task '{self.name}' is not a classification task", file=self.source)
        value = ex.fields.get(self.label_field)
        if value is None:
            raise DataError(f"example {ex.id} has no '{self.label_field}' field", file=ex.source,
                            line=ex.line, field=self.label_field)
        return normalize_label(value)

    def target_field(self) -> str:
        """Generation: the one field the ``target`` template prints (``"{{ fr }}"`` -> ``fr``); a template that is
        more than one field reference is a ConfigError (a model's output cannot be written back into it)."""
        match = re.fullmatch(r"\s*\{\{\s*([A-Za-z_]\w*)\s*\}\}\s*", self.target or "")
        if match is None:
            raise ConfigError(f"the target template {self.target!r} is not a single field reference",
                              file=self.source, field="target", hint='use target: "{{ FIELD }}"')
        return match.group(1)

    def with_label(self, ex: Example, label: str) -> Example:
        """``ex`` with label key ``label`` (classification; ``label_of`` returns it)."""
        if self.label_field is None:
            raise ConfigError(f"task '{self.name}' is not a classification task", file=self.source)
        return replace(ex, fields={**ex.fields, self.label_field: label})

    def with_target(self, ex: Example, text: str) -> Example:
        """``ex`` with reference output ``text`` (generation; ``target_of`` returns it), see `target_field`."""
        return replace(ex, fields={**ex.fields, self.target_field(): text})

    def resolve_path(self, path: str | Path) -> Path:
        """A data path: absolute as is, relative against the task file's folder (else the cwd)."""
        p = Path(os.path.expanduser(str(path)))
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return Path(os.path.normpath(p))

    def template_fields(self) -> set[str]:
        """Example fields the input (and target) templates refer to."""
        fields = template_fields(self.input)
        return fields | template_fields(self.target) if self.target else fields


def load_task(path: str | Path) -> Task:
    """The task in a YAML file (see `Task`); a data file given instead is pointed to ``adaptlab init``."""
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if Path(name).suffix.lower() in EXTENSIONS and Path(name).suffix.lower() != ".json":
        raise ConfigError("this is a data file, not a task file", file=path,
                          hint=f"write a task file for it with `adaptlab init {path}`")
    try:
        return load_yaml_model(path, Task, what="a task", keys="name, type, data, ...")[0]
    except ConfigError as exc:
        if "must be a mapping" in exc.message or exc.message.startswith(("invalid YAML", "not a text file")):
            exc.hint = f"a task file is YAML (name, type, data, input, labels); from a data file: `adaptlab init {path}`"
        raise


def builtin_task(name: str = "demo") -> Task:
    """A task shipped with the package (``adaptlab/<name>/task.yaml``)."""
    return load_package_file(name, name, BUILTIN_TASKS, "task.yaml", load_task)
