"""The analysis' results as records: curves, bests, crossovers, break-even, significance, sensitivity,
intervals and the majority baseline."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from adaptlab.results import CellRecord, Family, PredictionRow, Scenario


@dataclass
class CurvePoint:
    """One training size of a curve: ``mean``/``std``/``low``/``high`` of the value over ``n_seeds`` seeds."""

    n_train: int
    mean: float
    std: float
    low: float
    high: float
    n_seeds: int
    labels: float = math.nan
    """Labels used (training + dev labels read, `CellRecord.labels`), mean over the seeds."""


@dataclass
class Curve:
    variant: str
    strategy: str
    family: Family
    points: list[CurvePoint]


@dataclass
class Best:
    """A variant at one ``n_train``: mean and min/max of ``value`` over its seeds' ``cells``."""

    variant: str
    family: Family
    n_train: int
    mean: float
    low: float
    high: float
    cells: list[CellRecord]

    @property
    def strategy(self) -> str:
        return self.cells[0].strategy

    @property
    def labels(self) -> float:
        """Labels used (training + dev, `CellRecord.labels`), mean over the cells."""
        return math.fsum(c.labels for c in self.cells) / len(self.cells) if self.cells else math.nan

    def average(self, attr: str) -> float:
        """Mean of a numeric `CellRecord` attribute over the cells."""
        values = [getattr(c, attr) for c in self.cells]
        return math.fsum(values) / len(values) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "family": self.family, "strategy": self.strategy,
                "n_train": self.n_train, "labels": self.labels, "mean": self.mean, "low": self.low, "high": self.high,
                "cells": [{"key": c.key, "seed": c.seed, "value": c.value,
                           "artifact_dir": c.artifact_dir} for c in self.cells]}


@dataclass
class Crossover:
    """Labelled examples a fine-tune ``variant`` needs to match the ``target`` prompt variant: ``n`` in training
    labels (the grid's sizes), ``labels`` in labels used (training + dev labels read); ``*_low``/``*_high`` cross
    with the seed max/min curves. None: no stable crossing within the measured sizes."""

    variant: str
    target: str
    target_value: float
    n: float | None
    n_low: float | None
    n_high: float | None
    note: str
    labels: float | None = None
    labels_low: float | None = None
    labels_high: float | None = None
    target_labels: float = 0.0
    """Labels the target prompt itself used (mean over its seeds)."""


@dataclass
class BreakEven:
    """Query volume above which the fine-tune's total cost is lower than the prompt's.

    ``queries_*``: None when the fine-tune is not cheaper per query (never crosses); 0 when it is
    no dearer to train and per query (cheaper from the start). ``train_*`` are the fine-tune's
    one-off costs, ``prompt_train_*`` the prompt's fit; all are means over each Best's cells.
    ``queries_dollars`` counts each side's labels (``label_dollars``, ``prompt_label_dollars``: labels used x
    ``Scenario.price_per_label``) as a one-off beside training; ``queries_dollars_no_labels`` is the same
    break-even without the label price."""

    prompt: str
    finetune: str
    train_flops: float
    train_seconds: float
    train_dollars: float
    prompt_train_flops: float
    prompt_train_seconds: float
    prompt_train_dollars: float
    prompt_query_flops: float
    finetune_query_flops: float
    prompt_query_seconds: float
    finetune_query_seconds: float
    prompt_query_dollars: float
    finetune_query_dollars: float
    queries_flops: float | None
    queries_seconds: float | None
    queries_dollars: float | None
    label_dollars: float = 0.0
    prompt_label_dollars: float = 0.0
    queries_dollars_no_labels: float | None = None


@dataclass
class Significance:
    """Paired bootstrap of ``a`` - ``b`` on the same test examples (``n`` of them); ``method`` says what was
    resampled, ``seeds_a``/``seeds_b`` how many seeds of each side the test used (1 for a representative cell)."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    p_value: float
    n: int
    significant: bool
    metric: str = ""
    method: str = ""
    seeds_a: int = 1
    seeds_b: int = 1


@dataclass
class Interval:
    """A variant at one ``n_train``: its ``mean`` and the interval shown for it; ``method`` says exactly what
    the interval is (`adaptlab.analysis.intervals`): a hierarchical bootstrap over seeds and test examples, a
    bootstrap over test examples of one seed, or the seed range."""

    variant: str
    n_train: int
    mean: float
    low: float
    high: float
    method: str
    seeds: int
    n: int = 0
    """Test examples resampled (0: none, e.g. a seed range)."""


@dataclass
class Flag:
    """A variant at one ``n_train`` that is no better than guessing: at or below the majority baseline, or
    predicting one class for every example (``why``)."""

    variant: str
    n_train: int
    mean: float
    why: list[str]


@dataclass
class Baseline:
    """The majority-class baseline of a classification run's test sample, and the variants it flags."""

    metric: str
    value: float
    """The metric of always predicting ``label`` (the most frequent gold label of the test sample)."""
    label: str
    n: int
    """Test examples it was computed on."""
    prior: dict[str, float]
    """Label shares: of the training labels when cells recorded them, else of the test sample (``prior_from``)."""
    prior_from: str
    flagged: list[Flag] = field(default_factory=list)

    def flag(self, variant: str, n_train: int) -> Flag | None:
        return next((f for f in self.flagged if (f.variant, f.n_train) == (variant, n_train)), None)


@dataclass
class Sensitivity:
    """Spread of one prompt setup's metric ``across`` "formats" or "seeds" (the seed picks the
    demonstration set and order, so for k > 0 "seeds" is the spread across demonstration sets)."""

    strategy: str
    across: str
    values: list[float]
    std: float
    spread: float
    n_train: int = 0
    variants: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    curves: list[Curve]
    best_prompt: Best | None
    best_finetune: Best | None
    crossovers: list[Crossover]
    break_even: BreakEven | None
    significance: Significance | None
    sensitivity: list[Sensitivity]
    scenario: Scenario
    metric: str = ""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Failed cells: key, variant, strategy, n_train, seed, error."""
    notes: list[str] = field(default_factory=list)
    """Why a part is missing (e.g. no predictions to test significance on)."""
    cells: list[CellRecord] = field(default_factory=list, repr=False)
    """The ok cells analysed (for `best_of` with other limits); not in `to_dict`."""
    intervals: list[Interval] = field(default_factory=list)
    """Every (variant, n_train)'s mean and interval, each saying what it is."""
    baseline: Baseline | None = None
    """The majority-class baseline (classification runs with predictions; None otherwise)."""
    assumptions: list[str] = field(default_factory=list)
    """The cost assumptions, one sentence each (prices, serving mode, prefix cache, labels, volume, API prices)."""
    rows: dict[str, list[PredictionRow]] = field(default_factory=dict, repr=False)
    """Each ok cell's prediction rows by cell key (for paired tests of other candidates); not in `to_dict`."""

    def interval(self, variant: str, n_train: int) -> Interval | None:
        """The interval of ``variant`` at ``n_train`` (None if not computed)."""
        return next((i for i in self.intervals if (i.variant, i.n_train) == (variant, n_train)), None)

    def flag(self, variant: str, n_train: int) -> Flag | None:
        """Why ``variant`` at ``n_train`` is no better than guessing (None: it is not flagged)."""
        return self.baseline.flag(variant, n_train) if self.baseline is not None else None

    def predictions(self, key: str) -> list[PredictionRow]:
        """The prediction rows of cell ``key`` (empty when none were read)."""
        return self.rows.get(key, [])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinities become None)."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in ("cells", "rows")}
        json.dumps(out, allow_nan=False)  # fail here, not in the report writer
        return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return str(obj)
