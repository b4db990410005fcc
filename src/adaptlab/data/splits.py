"""Splits: carving missing dev/test splits out of train, nested stratified training subsets, and the checks
every command runs on the examples before it spends compute."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from adaptlab.data.example import SPLITS, Example, Splits
from adaptlab.data.sources import read_source
from adaptlab.data.task import Task
from adaptlab.errors import AdaptlabError, ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_DEV_FRACTION = 0.1
DEFAULT_DEV_MAX = 500


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
        check_unique_ids(examples, split)


def check_unique_ids(examples: Sequence[Example], what: str,
                     hint: str = "ids must be unique within a split; drop the id field to number rows by line") -> None:
    """Raise DataError at the first example whose id repeats an earlier one's (naming both rows)."""
    seen: dict[str, Example] = {}
    for ex in examples:
        first = seen.setdefault(ex.id, ex)
        if first is not ex:
            raise DataError(f"duplicate {what} example id '{ex.id}' (first at {first.source}:{first.line})",
                            file=ex.source, line=ex.line, field="id", hint=hint)


def load_split(task: Task, split: str, *, seed: int = 0) -> list[Example]:
    """One split as `load_splits` gives it (carving when the task needs it)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'", field="split", hint="use train, dev or test")
    spec = task.data
    carving = (spec.test is None and spec.test_size) or (spec.dev is None and spec.dev_size != 0)
    if spec.source(split) is not None and not (split == "train" and carving):
        return read_source(task, split)  # a split with its own source is never changed by carving
    return load_splits(task, seed=seed)[split]



def load_unlabeled(task: Task) -> list[Example]:
    """The task's unlabelled inputs (``data.unlabeled``): rows that need only the fields the input template prints.
    A task without the source, an empty source, or rows that all lack a printed field raise an error naming it."""
    from adaptlab.data.templates import missing_fields

    if task.data.unlabeled is None:
        raise ConfigError(f"task '{task.name}' has no unlabeled source", file=task.source, field="data.unlabeled",
                          hint="add `unlabeled: FILE` under data (rows with the input's fields)")
    rows = read_source(task, "unlabeled")
    if not rows:
        raise DataError("the unlabeled source holds no rows", file=task.source, field="data.unlabeled")
    missing, first = missing_fields(task.input, rows)
    absent = [name for name, n in missing.items() if n == len(rows)]
    if absent:
        raise DataError(f"no unlabeled row has the field '{absent[0]}' the input template prints",
                        file=first[absent[0]].source, field="data.unlabeled",
                        hint="have: " + ", ".join(sorted(first[absent[0]].fields)))
    return rows


def train_inputs(task: Task) -> list[Example]:
    """The rows of the task's train source less a test split carved from them (which depends on ``data.seed``
    only); the dev split is not carved (it depends on the run's seed: callers drop their own dev)."""
    if task.data.train is None:
        return []
    rows = read_source(task, "train")
    if task.data.test is not None or not task.data.test_size:
        return rows
    no_dev = task.model_copy(update={"data": task.data.model_copy(update={"dev_size": 0})})
    return carve_splits(no_dev, {"train": rows}).train
