"""Learning curves, the best of each family, and what a prompt is worth in labelled examples."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from adaptlab.analysis.records import Best, Crossover, Curve, CurvePoint
from adaptlab.results import CellRecord, Family

TIE = 1e-9
"""Means closer than this count as tied."""


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return math.fsum(vals) / len(vals) if vals else math.nan


def std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def ok_cells(cells: Iterable[CellRecord]) -> list[CellRecord]:
    return [c for c in cells if c.ok]


def groups(cells: Iterable[CellRecord]) -> dict[tuple[str, int], list[CellRecord]]:
    """Ok cells by (variant, n_train), each sorted by seed."""
    out: dict[tuple[str, int], list[CellRecord]] = defaultdict(list)
    for c in ok_cells(cells):
        out[(c.variant, c.n_train)].append(c)
    return {k: sorted(v, key=lambda c: c.seed) for k, v in out.items()}


def point(n: int, group: Sequence[CellRecord]) -> CurvePoint:
    vals = [c.value for c in group]
    return CurvePoint(n, mean(vals), std(vals), min(vals), max(vals), len(vals), mean(c.labels for c in group))


def learning_curves(cells: Iterable[CellRecord]) -> list[Curve]:
    """One curve per variant (prompt variants first, then by name), points sorted by n_train."""
    by_variant: dict[str, list[tuple[int, list[CellRecord]]]] = defaultdict(list)
    for (variant, n), group in groups(cells).items():
        by_variant[variant].append((n, group))
    curves = []
    for variant, items in by_variant.items():
        first = items[0][1][0]
        curves.append(Curve(variant, first.strategy, first.family,
                            [point(n, g) for n, g in sorted(items, key=lambda t: t[0])]))
    return sorted(curves, key=lambda c: (c.family != "prompt", c.variant))


def best_of(cells: Iterable[CellRecord], family: Family, *,
            max_labels: float | None = None) -> Best | None:
    """The (variant, n_train) of ``family`` with the highest mean over seeds (only those whose every seed used
    at most ``max_labels`` labels, `CellRecord.labels`, when given). Ties: lower mean query seconds, then query
    FLOPs, then smaller n."""
    cands = [(k, g) for k, g in groups(cells).items()
             if g[0].family == family and (max_labels is None or max(c.labels for c in g) <= max_labels)]
    if not cands:
        return None
    means = {k: mean(c.value for c in g) for k, g in cands}
    top = max(means.values())
    tied = [(k, g) for k, g in cands if means[k] >= top - TIE]
    (variant, n), group = min(tied, key=lambda kg: (
        mean(c.query_seconds for c in kg[1]), mean(c.query_flops for c in kg[1]), kg[0][1], kg[0][0]))
    vals = [c.value for c in group]
    return Best(variant, family, n, means[(variant, n)], min(vals), max(vals), list(group))


# -- What a prompt is worth in labelled examples -----------------------------------------------

def crossing(ns: Sequence[float], values: Sequence[float], target: float,
             label: str = "the target") -> tuple[float | None, str]:
    """The n from which ``values`` (sorted by ``ns``) stay at or above ``target`` up to the largest measured
    size, log-n interpolated between the last point below and the next, and a note. A curve above the target
    early that falls below it later has no crossing before that fall ("no stable crossing" when it ends below)."""
    if not ns:
        return None, "no points"
    below = [i for i, v in enumerate(values) if v < target]
    above = [i for i, v in enumerate(values) if v >= target]
    if not below:
        return float(ns[0]), f"matches from the smallest size (n={ns[0]:g})"
    last = below[-1]
    early = [i for i in above if i < last]
    if last == len(values) - 1:
        if early:
            return None, (f"above {label} at n={ns[early[0]]:g} but not at n={ns[last]:g}: no stable crossing")
        return None, f"does not reach {label} by n={max(ns):g}"
    n0, v0, n1, v1 = ns[last], values[last], ns[last + 1], values[last + 1]
    frac = (target - v0) / (v1 - v0)
    n = n0 + frac * (n1 - n0) if n0 <= 0 else n0 * (n1 / n0) ** frac
    dip = f"; above it at n={ns[early[0]]:g} but not at n={n0:g}" if early else ""
    return float(n), f"reaches {label} at n≈{n:.0f} (between n={n0:g} and n={n1:g}{dip})"


def prompt_worth(cells: Iterable[CellRecord], target: Best | None = None) -> list[Crossover]:
    """Per fine-tune variant, the labelled examples at which it matches ``target`` (default: the best prompt,
    `best_of(cells, "prompt")`) in training labels (``n``) and labels used (``labels``); the ``_low``/``_high``
    bounds cross with the seed max/min curves."""
    cells = ok_cells(cells)
    target = target or best_of(cells, "prompt")
    if target is None:
        return []
    out = []
    for curve in learning_curves(cells):
        if curve.family != "finetune":
            continue
        label = f"{target.variant} ({target.mean:.4g})"
        found = {}
        for axis, xs in (("n", [float(p.n_train) for p in curve.points]), ("labels", [p.labels for p in curve.points])):
            found[axis] = [crossing(xs, [getattr(p, side) for p in curve.points], target.mean, label)
                           for side in ("mean", "high", "low")]
        (n, note), (n_low, _), (n_high, _) = found["n"]
        (labels, _), (labels_low, _), (labels_high, _) = found["labels"]
        if labels is not None and n is not None and abs(labels - n) > 0.5:
            note += f"; about {labels:.0f} labels used"
        out.append(Crossover(curve.variant, target.variant, target.mean, n, n_low, n_high, note, labels,
                             labels_low, labels_high, target.labels))
    return out
