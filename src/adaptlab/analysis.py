"""What a compare run's cells say: learning curves, the best of each family, what a prompt is worth
in labelled examples, the break-even query volume, paired significance and prompt sensitivity.

Pure functions of `adaptlab.results` records (failed cells are ignored everywhere; `Analysis`
lists them). Choices, so the report can state them:

* Spread over seeds: ``std`` is the sample standard deviation (ddof=1; 0 for one seed);
  ``low``/``high`` are the min/max over seeds.
* Prompt strategies are curves too: their cells' ``n_train`` is k (0 for zero-shot), so a
  ``few_shot k=8`` variant is one point at n=8; kNN and prompt search have a point per pool size.
* `prompt_worth` (after Le Scao & Rush 2021): the first n at which a fine-tune's mean reaches the
  best prompt's mean, interpolated linearly in log n between the last point below and the first
  at/above (linearly in n when the point below is n=0, which log n cannot place). ``n_low`` is the
  same crossing of the max-over-seeds curve (the optimistic case), ``n_high`` of the min-over-seeds
  curve (pessimistic); the target is the best prompt's mean, taken as exact.
* Significance: per-example scores averaged over each side's seeds, paired by example id
  (examples shared by every cell of both), then a paired bootstrap over examples — for metrics
  that are a mean of per-example scores. Otherwise (macro-F1, BLEU, chrF) one cell per side, the
  seed whose value is nearest its mean (ties: lowest seed), with a paired corpus bootstrap.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from adaptlab.results import CellRecord, Family, PredictionRow, Scenario

log = logging.getLogger(__name__)

TEMPLATE_OPTIONS = ("format", "instruction", "answer_prefix", "input_prefix", "instruction_role",
                    "chat_demos")
"""Prompt options that change only the template (wording/layout), not what the model is shown."""
_TIE = 1e-9  # means closer than this count as tied


# -- Records -----------------------------------------------------------------------------------

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
        return _mean(getattr(c, attr) for c in self.cells)

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


# -- Curves and bests --------------------------------------------------------------------------

def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return math.fsum(vals) / len(vals) if vals else math.nan


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def _ok(cells: Iterable[CellRecord]) -> list[CellRecord]:
    return [c for c in cells if c.ok]


def _groups(cells: Iterable[CellRecord]) -> dict[tuple[str, int], list[CellRecord]]:
    """Ok cells by (variant, n_train), each sorted by seed."""
    out: dict[tuple[str, int], list[CellRecord]] = defaultdict(list)
    for c in _ok(cells):
        out[(c.variant, c.n_train)].append(c)
    return {k: sorted(v, key=lambda c: c.seed) for k, v in out.items()}


def _point(n: int, group: Sequence[CellRecord]) -> CurvePoint:
    vals = [c.value for c in group]
    return CurvePoint(n, _mean(vals), _std(vals), min(vals), max(vals), len(vals))


def learning_curves(cells: Iterable[CellRecord]) -> list[Curve]:
    """One curve per variant (prompt variants first, then by name), points sorted by n_train."""
    by_variant: dict[str, list[tuple[int, list[CellRecord]]]] = defaultdict(list)
    for (variant, n), group in _groups(cells).items():
        by_variant[variant].append((n, group))
    curves = []
    for variant, items in by_variant.items():
        first = items[0][1][0]
        curves.append(Curve(variant, first.strategy, first.family,
                            [_point(n, g) for n, g in sorted(items, key=lambda t: t[0])]))
    return sorted(curves, key=lambda c: (c.family != "prompt", c.variant))


def best_of(cells: Iterable[CellRecord], family: Family, *,
            max_labels: int | None = None) -> Best | None:
    """The (variant, n_train) of ``family`` with the highest mean over seeds (only n_train <=
    ``max_labels`` when given). Ties: lower mean query seconds, then query FLOPs, then smaller n."""
    cands = [(k, g) for k, g in _groups(cells).items()
             if g[0].family == family and (max_labels is None or k[1] <= max_labels)]
    if not cands:
        return None
    means = {k: _mean(c.value for c in g) for k, g in cands}
    top = max(means.values())
    tied = [(k, g) for k, g in cands if means[k] >= top - _TIE]
    (variant, n), group = min(tied, key=lambda kg: (
        _mean(c.query_seconds for c in kg[1]), _mean(c.query_flops for c in kg[1]), kg[0][1], kg[0][0]))
    vals = [c.value for c in group]
    return Best(variant, family, n, means[(variant, n)], min(vals), max(vals), list(group))


# -- What a prompt is worth in labelled examples -----------------------------------------------

def crossing(ns: Sequence[float], values: Sequence[float], target: float,
             label: str = "the target") -> tuple[float | None, str]:
    """First n where ``values`` (sorted by ``ns``) reach ``target``, log-n interpolated, and a note."""
    for i, (n1, v1) in enumerate(zip(ns, values)):
        if v1 < target:
            continue
        if i == 0:
            return float(n1), f"matches from the smallest size (n={n1:g})"
        n0, v0 = ns[i - 1], values[i - 1]
        frac = (target - v0) / (v1 - v0)
        n = n0 + frac * (n1 - n0) if n0 <= 0 else n0 * (n1 / n0) ** frac
        return float(n), f"reaches {label} at n≈{n:.0f} (between n={n0:g} and n={n1:g})"
    return None, (f"does not reach {label} by n={max(ns):g}" if ns else "no points")


def prompt_worth(cells: Iterable[CellRecord], target: Best | None = None) -> list[Crossover]:
    """Per fine-tune variant, the labelled examples at which it matches ``target`` (default: the
    best prompt, `best_of(cells, "prompt")`); n_low/n_high cross with the seed max/min curves."""
    cells = _ok(cells)
    target = target or best_of(cells, "prompt")
    if target is None:
        return []
    out = []
    for curve in learning_curves(cells):
        if curve.family != "finetune":
            continue
        ns = [p.n_train for p in curve.points]
        label = f"{target.variant} ({target.mean:.4g})"
        n, note = crossing(ns, [p.mean for p in curve.points], target.mean, label)
        n_low, _ = crossing(ns, [p.high for p in curve.points], target.mean)
        n_high, _ = crossing(ns, [p.low for p in curve.points], target.mean)
        out.append(Crossover(curve.variant, target.variant, target.mean, n, n_low, n_high, note))
    return out


# -- Break-even query volume -------------------------------------------------------------------

def queries_to_break_even(train_prompt: float, train_ft: float, query_prompt: float,
                          query_ft: float) -> float | None:
    """(train_ft - train_prompt) / (query_prompt - query_ft) if the fine-tune is cheaper per query
    (0 if also no dearer to train: cheaper from the start); None if it is dearer per query."""
    if query_prompt > query_ft:
        return max(0.0, (train_ft - train_prompt) / (query_prompt - query_ft))
    if query_prompt == query_ft and train_ft <= train_prompt:
        return 0.0
    return None


def _costs(best: Best, scenario: Scenario) -> dict[str, tuple[float, float]]:
    """Unit -> (mean one-off cost, mean cost per query) over the Best's cells."""
    return {"flops": (best.average("train_flops"), best.average("query_flops")),
            "seconds": (best.average("train_seconds"), best.average("query_seconds")),
            "dollars": (_mean(c.train_cost(scenario) for c in best.cells),
                        _mean(c.query_cost(scenario) for c in best.cells))}


def break_even(prompt: Best, finetune: Best, scenario: Scenario) -> BreakEven:
    """Break-even volumes in FLOPs, measured seconds and $ (means over each Best's cells)."""
    p, f = _costs(prompt, scenario), _costs(finetune, scenario)
    kw: dict[str, Any] = {}
    for unit in ("flops", "seconds", "dollars"):
        kw[f"train_{unit}"], kw[f"finetune_query_{unit}"] = f[unit]
        kw[f"prompt_train_{unit}"], kw[f"prompt_query_{unit}"] = p[unit]
        kw[f"queries_{unit}"] = queries_to_break_even(p[unit][0], f[unit][0], p[unit][1], f[unit][1])
    return BreakEven(prompt=prompt.variant, finetune=finetune.variant, **kw)


def cumulative_cost_curve(best: Best, scenario: Scenario, volumes: Iterable[float]) -> list[float]:
    """$ spent after each query volume: mean one-off cost + volume x mean $ per query."""
    train, query = _costs(best, scenario)["dollars"]
    return [train + float(v) * query for v in volumes]


# -- Paired significance -----------------------------------------------------------------------

def _metric(name: str) -> Any | None:
    from adaptlab.errors import ConfigError
    from adaptlab.metrics import get_metric

    try:
        return get_metric(name)
    except ConfigError:
        return None  # unknown metric: treat the per-example scores as decomposable


def _by_id(rows: Iterable[PredictionRow]) -> dict[str, PredictionRow]:
    return {str(r.example_id): r for r in reversed(list(rows))}  # the first row of an id wins


def _significance(a: str, b: str, t: Any, confidence: float, metric: str, how: str) -> Significance:
    return Significance(a, b, t.diff, t.low, t.high, t.p_value, t.n, t.p_value < 1.0 - confidence,
                        metric, f"paired bootstrap on {t.n} shared examples, {how}")


def paired_significance(a: CellRecord, b: CellRecord, rows_a: Iterable[PredictionRow],
                        rows_b: Iterable[PredictionRow], *, metric: str | None = None, seed: int = 0,
                        n_resamples: int = 1000, confidence: float = 0.95) -> Significance:
    """Paired bootstrap of cell ``a`` - cell ``b`` on their shared example ids (ValueError if none):
    on per-example scores for mean metrics, on the corpus metric (pred vs gold) otherwise."""
    from adaptlab.metrics import paired_bootstrap, paired_bootstrap_scores

    ra, rb = _by_id(rows_a), _by_id(rows_b)
    ids = [i for i in ra if i in rb]
    if not ids:
        raise ValueError(f"cells {a.key[:12]} and {b.key[:12]} share no test example ids")
    name = metric or a.metric
    m = _metric(name)
    if m is None or m.is_mean:
        t = paired_bootstrap_scores([ra[i].score for i in ids], [rb[i].score for i in ids],
                                    n_resamples=n_resamples, confidence=confidence, seed=seed)
    else:
        t = paired_bootstrap(m, [ra[i].pred for i in ids], [rb[i].pred for i in ids],
                             [ra[i].gold for i in ids], n_resamples=n_resamples,
                             confidence=confidence, seed=seed)
    return _significance(a.variant, b.variant, t, confidence, name, f"seed {a.seed} vs seed {b.seed}")


def representative(best: Best) -> CellRecord:
    """The Best's cell whose value is nearest its mean (ties: lowest seed)."""
    return min(best.cells, key=lambda c: (abs(c.value - best.mean), c.seed))


def compare_best(a: Best, b: Best, predictions: Callable[[str], list[PredictionRow]], *,
                 seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95) -> Significance:
    """Paired significance of ``a`` - ``b``: per-example scores averaged over each side's seeds on
    the examples every cell shares (mean metrics), else `paired_significance` of `representative`
    cells. ValueError if they share no example."""
    from adaptlab.metrics import paired_bootstrap_scores

    name = a.cells[0].metric
    m = _metric(name)
    if m is not None and not m.is_mean:
        ca, cb = representative(a), representative(b)
        return paired_significance(ca, cb, predictions(ca.key), predictions(cb.key), metric=name,
                                   seed=seed, n_resamples=n_resamples, confidence=confidence)
    maps = [(c, _by_id(predictions(c.key))) for c in a.cells + b.cells]
    ids = [i for i in maps[0][1] if all(i in rows for _, rows in maps[1:])]
    if not ids:
        raise ValueError(f"{a.variant} and {b.variant} share no test example ids")

    def averaged(side: Sequence[tuple[CellRecord, dict[str, PredictionRow]]]) -> list[float]:
        return [_mean(rows[i].score for _, rows in side) for i in ids]

    k = len(a.cells)
    t = paired_bootstrap_scores(averaged(maps[:k]), averaged(maps[k:]), n_resamples=n_resamples,
                                confidence=confidence, seed=seed)
    return _significance(a.variant, b.variant, t, confidence, name,
                         f"per-example scores averaged over {k} vs {len(b.cells)} seeds")


# -- Prompt sensitivity ------------------------------------------------------------------------

def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def sensitivity(cells: Iterable[CellRecord], *, family: Family = "prompt") -> list[Sensitivity]:
    """Spread across templates (variants of a strategy at one n_train differing only in
    `TEMPLATE_OPTIONS`; values are per-template means over seeds) and across seeds (one variant
    at one n_train; values per seed). Only groups with two or more values."""
    ok = [c for c in _ok(cells) if c.family == family]
    out: list[Sensitivity] = []
    by_strategy: dict[str, list[CellRecord]] = defaultdict(list)
    for c in ok:
        by_strategy[c.strategy].append(c)
    for strategy, group in sorted(by_strategy.items()):
        keys = {k for c in group for k in c.options if k not in TEMPLATE_OPTIONS}
        varying = sorted(k for k in keys if len({_frozen(c.options.get(k)) for c in group}) > 1)
        setups: dict[tuple[int, str], dict[str, list[CellRecord]]] = {}
        for c in group:
            rest = _frozen({k: c.options.get(k) for k in keys})
            setups.setdefault((c.n_train, rest), defaultdict(list))[c.variant].append(c)
        for (n, _), variants in sorted(setups.items()):
            if len(variants) < 2:
                continue
            opts = variants[next(iter(variants))][0].options
            label = " ".join([strategy, *(f"{k}={opts.get(k)}" for k in varying)])
            names = sorted(variants)
            vals = [_mean(c.value for c in variants[v]) for v in names]
            out.append(Sensitivity(label, "templates", vals, _std(vals), max(vals) - min(vals), n,
                                   names))
    for (variant, n), group in sorted(_groups(ok).items()):
        vals = [c.value for c in group]
        if len(vals) >= 2:
            out.append(Sensitivity(variant, "seeds", vals, _std(vals), max(vals) - min(vals), n, [variant]))
    return out


# -- Everything --------------------------------------------------------------------------------

def analyze(cells: Iterable[CellRecord], predictions: Callable[[str], list[PredictionRow]],
            scenario: Scenario) -> Analysis:
    """All of the above on the ok cells, their per-query costs as the scenario serves them
    (`CellRecord.served`). The bests respect ``scenario.labels_available``;
    significance is `compare_best` (fine-tune - prompt), None with a note if it cannot run."""
    cells = [c.served(scenario) for c in cells]
    ok = _ok(cells)
    failed = [{"key": c.key, "variant": c.variant, "strategy": c.strategy, "n_train": c.n_train,
               "seed": c.seed, "error": c.error or "no metric value"} for c in cells if not c.ok]
    metrics = sorted({c.metric for c in ok})
    notes = [f"cells report different metrics: {', '.join(metrics)}"] if len(metrics) > 1 else []
    limit = scenario.labels_available
    best_p = best_of(ok, "prompt", max_labels=limit)
    best_f = best_of(ok, "finetune", max_labels=limit)
    within = f" with <= {limit} labels" if limit is not None else ""
    notes += [f"no successful {what} cell{within}" for what, best in
              (("prompt", best_p), ("fine-tuning", best_f)) if best is None]
    even = break_even(best_p, best_f, scenario) if best_p and best_f else None
    sig = None
    if best_p and best_f:
        try:
            sig = compare_best(best_f, best_p, predictions)
        except (ValueError, KeyError, OSError) as e:
            log.warning("no significance test: %s", e)
            notes.append(f"no significance test: {e}")
    return Analysis(curves=learning_curves(ok), best_prompt=best_p, best_finetune=best_f,
                    crossovers=prompt_worth(ok, best_p) if best_p else [], break_even=even,
                    significance=sig,
                    sensitivity=sensitivity(ok), scenario=scenario,
                    metric=metrics[0] if metrics else "", failed=failed, notes=notes, cells=ok)
