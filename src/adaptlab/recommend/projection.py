"""An accuracy target no candidate meets: the labels each fine-tune learning curve needs (`target_unmet`).

Each fine-tune variant's cells give per-seed curves {labels used: value}; `stats.project_labels` reads them:
the smallest measured size whose mean reaches the target (measured), else the saturating inverse power law
``a - b * n**-c`` fitted to every seed's points, with a 90% interval over seed-bootstrap refits (its low end
raised to the largest measured size, which the measured means put below the target). It refuses (the reason
goes into the reasons, with no number) with fewer than 3 sizes, a curve that does not rise, a fit that levels
off below the target, a crossing beyond `PROJECTION_FACTOR` x the largest measured size, or when fewer than
half the replicates reach the target. The fewest labels needed give "collect_labels"; labels on hand that
already suffice (a size beyond the run) give "finetune" on all of them, flagged as projected.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from adaptlab.analysis.stats import Projection, project_labels
from adaptlab.recommend.options import Option, latency_ok
from adaptlab.recommend.text import Recommendation, a_an, fmt_metric, metric_scale, round_up
from adaptlab.results import CellRecord, Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis

PROJECTION_FACTOR = 4.0
"""A learning curve is projected at most to this multiple of its largest measured size (labels used)."""


def count(n: float) -> str:
    """A label count as sentences write it: 1,250."""
    return f"{int(round(n)):,}"


def round_down(n: float) -> int:
    """Floor to two significant digits (the low end of a projected interval)."""
    n = max(1.0, math.floor(n))
    step = 10 ** max(0, int(math.log10(n)) - 1)
    return int(math.floor(n / step) * step)


def seed_curves(cells: list[CellRecord], variant: str) -> dict[int, dict[float, float]]:
    """Per seed, {labels used: value} of ``variant``'s cells."""
    out: dict[int, dict[float, float]] = {}
    for c in cells:
        if c.variant == variant:
            out.setdefault(c.seed, {})[float(c.labels)] = c.value
    return out


def bounds(proj: Projection) -> tuple[int | None, int | None]:
    """The projected interval in labels, rounded outwards; its low end is at least the largest measured size
    (every measured size's mean is below the target, or the answer would be measured). None for a measured one."""
    if proj.low is None or proj.high is None or proj.measured:
        return None, None
    return round_down(max(proj.low, proj.n_max)), round_up(proj.high)


def interval_words(proj: Projection) -> str:
    """'90% interval 920-1,640' (labels in all), or why there is none."""
    low, high = bounds(proj)
    if low is None or high is None:
        return "no interval: one seed" if proj.seeds < 2 else "no interval"
    return f"{proj.confidence:.0%} interval {count(low)}-{count(high)}"


def _sentence(variant: str, proj: Projection, cells: list[CellRecord], metric: str) -> str:
    goal = fmt_metric(proj.target, metric)
    if proj.refused is not None:
        beyond = proj.curve.labels_to_reach(proj.target) if proj.curve is not None else None
        if beyond is not None and beyond > PROJECTION_FACTOR * proj.n_max:
            return (f"{variant}: the fitted curve reaches {goal} only beyond {PROJECTION_FACTOR:g}x the largest "
                    f"measured size ({count(proj.n_max)} labels used): not projected.")
        return f"{variant}: {proj.refused}."
    assert proj.n is not None
    if proj.measured:
        at = [c.value for c in cells if c.variant == variant and float(c.labels) == proj.n]
        mean = sum(at) / len(at) if at else proj.target
        return f"Measured: {variant} reached {fmt_metric(mean, metric)} at {count(proj.n)} labels used."
    curve = proj.curve
    assert curve is not None
    share = f"; {proj.reach_share:.0%} of the seed-bootstrap curves reach it" if math.isfinite(proj.reach_share) else ""
    return (f"Projected: {variant} (saturating fit a - b·n^-c levelling off at {fmt_metric(curve.a, metric)}, "
            f"measured up to {count(proj.n_max)} labels used, {proj.seeds} seed{'s' if proj.seeds != 1 else ''}) "
            f"reaches {goal} at about {count(round_up(proj.n))} labels ({interval_words(proj)}{share}).")


def target_unmet(analysis: Analysis, cells: list[CellRecord], opts: dict[str, Option | None], sc: Scenario,
                 labels: float, budget: float | None, reasons: list[str]) -> Recommendation:
    """The recommendation when no candidate reaches ``sc.accuracy_target`` (module doc)."""
    target = float(sc.accuracy_target)  # type: ignore[arg-type]
    fallback = max((o for o in opts.values() if o), key=lambda o: o.mean, default=None)
    metric = analysis.metric or "accuracy"
    goal, have = fmt_metric(target, metric), count(labels)
    if fallback is not None:
        reasons.append(f"No candidate reaches the {metric} target {goal}: the best within {have} labels, "
                       f"{fallback.describe()}.")
    fast = {c.variant for c in latency_ok(cells, budget)}
    found: list[tuple[float, str, Projection]] = []
    for curve in analysis.curves:
        if curve.family != "finetune" or curve.variant not in fast:
            continue
        proj = project_labels(seed_curves(cells, curve.variant), target, max_score=metric_scale(metric),
                              max_factor=PROJECTION_FACTOR)
        reasons.append(_sentence(curve.variant, proj, cells, metric))
        if proj.ok and proj.n is not None and (proj.n > labels or proj.n_max < labels):
            found.append((proj.n, curve.variant, proj))
    key = fallback.cell_key if fallback else None
    if found:
        n, variant, proj = min(found, key=lambda t: t[0])
        need = int(math.ceil(n)) if proj.measured else round_up(n)
        low, high = bounds(proj)
        if n <= labels:  # ship the variant's measured cell until it is retrained on every label
            ft = opts["finetune"]
            key = ft.cell_key if ft is not None and ft.name == variant else key
            beyond = f", reaching beyond the {have} on hand" if high is not None and high > labels else ""
            return Recommendation("finetune", variant, key, f"Fine-tune {variant} on all {have} labels: projected "
                                  f"to reach {goal} {metric} with about {count(need)} ({interval_words(proj)}{beyond}; "
                                  f"measured only up to {count(proj.n_max)}); confirm with a run.", reasons, [],
                                  "measured", need, labels_low=low, labels_high=high)
        extra = max(0.0, need - labels) if proj.measured else round_up(max(1.0, n - labels))
        more = f"{count(extra)} more than the {have} on hand"
        how = (f"{count(need)} labels in all ({more}) are measured" if proj.measured
               else f"about {count(need)} labels in all ({interval_words(proj)}; {more}) are projected")
        would = ([f"With {a_an(metric)} {metric} target at or below {fallback.fmt(fallback.mean)}, {fallback.name} "
                  "meets it now."] if fallback else [])
        return Recommendation("collect_labels", variant, key, f"Collect more labels: {how} to let "
                              f"{variant} reach {goal} {metric}.", reasons, would, "measured", need,
                              labels_low=low, labels_high=high)
    assert fallback is not None  # recommend() returned earlier when no family has a candidate
    reasons.append("Warning: no measured or projected option reaches the target; shipping the best available.")
    return Recommendation(fallback.family, fallback.name, key,  # type: ignore[arg-type]
                          f"Ship {fallback.name} ({fallback.fmt(fallback.mean)} {metric}), but it misses the target "
                          f"{goal} and no learning curve projects reaching it.", reasons, [], "measured", None)
