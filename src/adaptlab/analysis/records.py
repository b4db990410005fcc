"""The analysis' results as records: curves, bests, crossovers, break-even, significance, sensitivity."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from adaptlab.results import CellRecord, Family, Scenario


@dataclass
class CurvePoint:
    n_train: int
    mean: float
    std: float
    low: float
    high: float
    n_seeds: int


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

    def average(self, attr: str) -> float:
        """Mean of a numeric `CellRecord` attribute over the cells."""
        values = [getattr(c, attr) for c in self.cells]
        return math.fsum(values) / len(values) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "family": self.family, "strategy": self.strategy,
                "n_train": self.n_train, "mean": self.mean, "low": self.low, "high": self.high,
                "cells": [{"key": c.key, "seed": c.seed, "value": c.value,
                           "artifact_dir": c.artifact_dir} for c in self.cells]}


@dataclass
class Crossover:
    """Labelled examples a fine-tune ``variant`` needs to match the ``target`` prompt variant."""

    variant: str
    target: str
    target_value: float
    n: float | None
    n_low: float | None
    n_high: float | None
    note: str


@dataclass
class BreakEven:
    """Query volume above which the fine-tune's total cost is lower than the prompt's.

    ``queries_*``: None when the fine-tune is not cheaper per query (never crosses); 0 when it is
    no dearer to train and per query (cheaper from the start). ``train_*`` are the fine-tune's
    one-off costs, ``prompt_train_*`` the prompt's fit; all are means over each Best's cells."""

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


@dataclass
class Significance:
    """Paired bootstrap of ``a`` - ``b`` on the same test examples (``n`` of them)."""

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


@dataclass
class Sensitivity:
    """Spread of one prompt setup's metric ``across`` "templates" or "seeds" (the seed picks the
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN and infinities become None)."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "cells"}
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
