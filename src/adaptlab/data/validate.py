"""``adaptlab validate``: check a task's data before spending compute on it.

Per split: rows, label distribution, unknown or missing labels, duplicate inputs and ids, empty
inputs, fields the templates use but rows lack, inputs longer than the model's context, and
leakage (identical normalised inputs in dev/test and train). Problems that make results wrong
are errors (``report.ok`` is False, the CLI exits 1); suspicious data are warnings.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data.example import SPLITS, Example
from adaptlab.data.sources import read_source
from adaptlab.data.splits import carve_splits
from adaptlab.data.task import Task, load_task
from adaptlab.data.templates import missing_fields, recording_template
from adaptlab.errors import AdaptlabError, DataError, closest

logger = logging.getLogger(__name__)

MAX_LISTED = 20
"""Malformed rows listed one by one before the rest are summarised."""


@dataclass
class SplitReport:
    """What validation found in one split."""

    name: str
    rows: int = 0
    sources: list[str] = field(default_factory=list)
    carved_from: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    """Known label key -> rows, in the task's label order."""
    unknown_labels: dict[str, int] = field(default_factory=dict)
    missing_labels: int = 0
    duplicates: int = 0
    """Rows whose rendered input repeats an earlier row's."""
    conflicting_duplicates: int = 0
    """Of those, rows whose label differs from the earlier row's."""
    duplicate_ids: int = 0
    empty_inputs: int = 0
    empty_targets: int = 0
    missing_fields: dict[str, int] = field(default_factory=dict)
    """Template field -> rows that lack it where the template prints it."""
    overlap: dict[str, int] = field(default_factory=dict)
    """Other split -> rows of this split whose normalised input also occurs there (leakage)."""
    too_long: int = 0
    max_input_tokens: int | None = None
    malformed: int = 0


@dataclass
class ValidationReport:
    """Validation result; ``ok`` when there are no errors (warnings allowed)."""

    task: str
    type: str
    source: str | None
    splits: dict[str, SplitReport] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_tokens: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def normalize_text(text: str) -> str:
    """Text as compared for duplicates and leakage: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def _where(ex: Example) -> str:
    return f"{ex.source}:{ex.line}"


def _token_counter(tokenizer: Any) -> Callable[[Sequence[str]], list[int]]:
    """Token counts from an `LM` (count_tokens), a Hugging Face tokenizer, or a callable."""
    if hasattr(tokenizer, "count_tokens"):
        return lambda texts: [int(tokenizer.count_tokens(t)) for t in texts]

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        out = tokenizer(list(texts), add_special_tokens=False) if hasattr(tokenizer, "encode") else None
        if out is not None and "input_ids" in out:
            return [len(ids) for ids in out["input_ids"]]
        results = [tokenizer(t) for t in texts]
        return [r if isinstance(r, int) else len(r) for r in results]
    return count


class _Checker:
    """Per-split checks; collects errors and warnings into the report."""

    def __init__(self, task: Task, report: ValidationReport, counter: Callable | None,
                 max_tokens: int | None) -> None:
        self.task, self.report, self.counter, self.max_tokens = task, report, counter, max_tokens
        self.sink: list[str] = []
        self.input_tpl = recording_template(task.input, self.sink)
        self.target_tpl = recording_template(task.target, self.sink) if task.target else None
        self.normalised: dict[str, dict[str, Example]] = {}

    def error(self, split: str, msg: str) -> None:
        self.report.errors.append(f"{split}: {msg}")

    def warn(self, split: str, msg: str) -> None:
        self.report.warnings.append(f"{split}: {msg}")

    def _render(self, tpl: Any, ex: Example, split: str, what: str, missing: Counter,
                first: dict[str, Example]) -> str | None:
        self.sink.clear()
        try:
            text = tpl.render(ex.fields)
        except Exception as exc:  # a template error on this row's values (e.g. attribute of a number)
            self.error(split, f"{_where(ex)}: cannot render the {what} template: {exc}")
            return None
        for name in self.sink:
            missing[name] += 1
            first.setdefault(name, ex)
        return text

    def check(self, split: str, examples: list[Example], stats: SplitReport) -> None:
        task = self.task
        stats.rows = len(examples)
        missing: Counter[str] = Counter()
        first_missing: dict[str, Example] = {}
        inputs: list[str] = []
        labels: list[str | None] = []
        known = set(task.labels)
        unknown_first: dict[str, Example] = {}
        for ex in examples:
            text = self._render(self.input_tpl, ex, split, "input", missing, first_missing)
            inputs.append(text or "")
            if self.target_tpl is not None:
                target = self._render(self.target_tpl, ex, split, "target", missing, first_missing)
                stats.empty_targets += not (target or "").strip()
            label = None
            if task.type == "classification":
                try:
                    label = task.label_of(ex)
                except AdaptlabError:
                    stats.missing_labels += 1
                else:
                    if label in known:
                        stats.labels[label] = stats.labels.get(label, 0) + 1
                    else:
                        stats.unknown_labels[label] = stats.unknown_labels.get(label, 0) + 1
                        unknown_first.setdefault(label, ex)
            labels.append(label)
        stats.labels = {k: stats.labels.get(k, 0) for k in task.labels}
        self._report_fields(split, examples, stats, missing, first_missing)
        self._report_labels(split, examples, stats, unknown_first)
        self._report_inputs(split, examples, stats, inputs, labels)

    def _report_fields(self, split: str, examples: list[Example], stats: SplitReport,
                       missing: Counter, first: dict[str, Example]) -> None:
        stats.missing_fields = dict(missing)
        for name, n in missing.items():
            ex = first[name]
            if n == len(examples):
                have = sorted(ex.fields)
                guess = closest(name, have)
                self.error(split, f"the templates print field '{name}' but no row has it (fields: "
                           f"{', '.join(have)})" + (f"; did you mean '{guess}'?" if guess else ""))
            else:
                self.warn(split, f"{n} rows lack field '{name}' that the templates print "
                          f"(first at {_where(ex)})")

    def _report_labels(self, split: str, examples: list[Example], stats: SplitReport,
                       unknown_first: dict[str, Example]) -> None:
        if self.task.type != "classification":
            return
        if stats.missing_labels:
            self.error(split, f"{stats.missing_labels} rows have no '{self.task.label_field}' value")
        if stats.unknown_labels:
            listed = ", ".join(f"'{k}' ×{n} (first at {_where(unknown_first[k])})"
                               for k, n in list(stats.unknown_labels.items())[:5])
            self.error(split, f"labels not in the task's `labels`: {listed} (add them to `labels` "
                       "or map them with `label_map` on the split's source)")
        absent = [k for k, n in stats.labels.items() if n == 0]
        if absent and examples:
            self.warn(split, "no rows with label " + ", ".join(f"'{k}'" for k in absent))

    def _report_inputs(self, split: str, examples: list[Example], stats: SplitReport,
                       inputs: list[str], labels: list[str | None]) -> None:
        seen: dict[str, int] = {}
        dup_example = None
        for i, text in enumerate(inputs):
            norm = normalize_text(text)
            if not norm:
                stats.empty_inputs += 1
                continue
            j = seen.setdefault(norm, i)
            if j != i:
                stats.duplicates += 1
                stats.conflicting_duplicates += labels[i] != labels[j]
                dup_example = dup_example or (examples[i], examples[j])
        self.normalised[split] = {normalize_text(t): ex for t, ex in zip(inputs, examples, strict=True) if t.strip()}
        if stats.empty_inputs == len(examples) and examples:
            self.error(split, "every input renders empty: check the `input` template")
        elif stats.empty_inputs:
            self.warn(split, f"{stats.empty_inputs} inputs render empty")
        if stats.empty_targets:
            self.warn(split, f"{stats.empty_targets} targets render empty")
        if stats.duplicates:
            a, b = dup_example
            self.warn(split, f"{stats.duplicates} rows repeat an earlier input (e.g. {a.id} at {_where(a)} "
                      f"repeats {b.id})" + (f"; {stats.conflicting_duplicates} of them with a different label"
                                            if stats.conflicting_duplicates else ""))
        ids = Counter(ex.id for ex in examples)
        stats.duplicate_ids = sum(n - 1 for n in ids.values() if n > 1)
        if stats.duplicate_ids:
            dup = next(k for k, n in ids.items() if n > 1)
            msg = f"{stats.duplicate_ids} duplicate example ids (e.g. '{dup}')"
            if split == "train":
                self.warn(split, msg)
            else:  # predictions are keyed by id: evaluating this split is refused
                self.error(split, msg + "; ids must be unique in an evaluated split")
        if self.counter is not None and inputs:
            lengths = self.counter(inputs)
            stats.max_input_tokens = max(lengths)
            if self.max_tokens:
                stats.too_long = sum(n > self.max_tokens for n in lengths)
                if stats.too_long:
                    self.warn(split, f"{stats.too_long} inputs exceed the model's {self.max_tokens}-token "
                              f"context (longest: {stats.max_input_tokens} tokens); they will be truncated")

    def leakage(self, split: str, other: str, stats: SplitReport) -> None:
        mine, theirs = self.normalised.get(split, {}), self.normalised.get(other, {})
        common = [t for t in mine if t in theirs]
        if common:
            stats.overlap[other] = len(common)
            a, b = mine[common[0]], theirs[common[0]]
            self.warn(split, f"{len(common)} inputs also occur in {other} (leakage), e.g. {split} "
                      f"{a.id} at {_where(a)} = {other} {b.id} at {_where(b)}")


def validate_task(task: Task | str | Path, *, tokenizer: Any = None, max_tokens: int | None = None,
                  seed: int = 0) -> ValidationReport:
    """Check every split of ``task`` (a Task or a YAML path). ``tokenizer`` (a Hugging Face
    tokenizer, an `LM` or a callable) with ``max_tokens`` enables the context-length check."""
    if not isinstance(task, Task):
        task = load_task(task)
    report = ValidationReport(task=task.name, type=task.type,
                              source=str(task.source) if task.source else None, max_tokens=max_tokens)
    malformed: dict[str, list[DataError]] = {}
    loaded: dict[str, list[Example]] = {}
    for split in SPLITS:
        if task.data.source(split) is None:
            continue
        malformed[split] = []
        try:
            loaded[split] = read_source(task, split, errors=malformed[split])
        except AdaptlabError as exc:
            report.errors.append(f"{split}: {exc.one_line()}")
    try:
        splits = carve_splits(task, loaded, seed=seed)
    except AdaptlabError as exc:
        report.errors.append(exc.one_line())
        splits = carve_splits(task.model_copy(update={"data": task.data.model_copy(
            update={"dev_size": 0, "test_size": None})}), loaded, seed=seed)
    counter = _token_counter(tokenizer) if tokenizer is not None else None
    checker = _Checker(task, report, counter, max_tokens)
    listed = 0
    for split, examples in splits.items():
        stats = SplitReport(name=split)
        spec = task.data.source(split)
        if spec is None:
            stats.carved_from = "train" if examples else None
        else:
            stats.sources = ([str(task.resolve_path(p)) for p in spec.parallel.values()] if spec.parallel
                             else [spec.hf or str(task.resolve_path(spec.path or ""))])
        bad = malformed.get(split, [])
        stats.malformed = len(bad)
        if spec is not None and split in loaded and not loaded[split] and not bad:
            report.errors.append(f"{split}: {stats.sources[0]} holds no rows")
        for err in bad[:max(0, MAX_LISTED - listed)]:
            report.errors.append(f"{split}: {err.one_line()}")
        listed += min(len(bad), max(0, MAX_LISTED - listed))
        checker.check(split, examples, stats)
        report.splits[split] = stats
    if listed < sum(len(b) for b in malformed.values()):
        report.errors.append(f"... and {sum(len(b) for b in malformed.values()) - listed} more malformed rows")
    for split, other in (("dev", "train"), ("test", "train"), ("test", "dev")):
        checker.leakage(split, other, report.splits[split])
    if not splits.train:
        report.warnings.append("no training examples: only zero-shot prompting can run")
    if not splits.test:
        report.warnings.append("no test examples: add data.test (or data.test_size to carve one)")
    return report


def check_templates(task: Task, splits: Mapping[str, Sequence[Example]]) -> None:
    """What every command that spends compute checks first (the same check as `validate_task`): a field the
    input or target template prints but no row of a split has is a `DataError` naming the first row, the field
    and the columns there are; a row whose values the template cannot render is one too. Rows that lack a
    field others have are logged as a warning."""
    templates = [("input", task.input)] + ([("target", task.target)] if task.target else [])
    for split, examples in splits.items():
        for what, text in templates:
            missing, first = missing_fields(text, examples, what=what)
            for name, n in missing.items():
                ex = first[name]
                if n == len(examples):
                    have = sorted(ex.fields)
                    guess = closest(name, have)
                    raise DataError(f"the {what} template prints field '{name}' but no {split} row has it",
                                    file=ex.source, line=ex.line, field=what,
                                    hint=(f"did you mean '{guess}'? " if guess else "") + "columns: " + ", ".join(have))
                logger.warning("%d of %d %s rows lack field '%s' that the %s template prints (first at %s): it "
                               "renders empty there", n, len(examples), split, name, what, _where(ex))
