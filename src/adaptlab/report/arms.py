"""The report's view of the four options (prompt the large model, fine-tune the small one, distil, cascade): the
options table, the distillation curve and the cascade curve.

* Options table: `Recommendation.options`, one row per arm with a finished cell (its best under the scenario),
  quality interval, labels, $ per 1,000 queries under that cell's model's pricing, one-off and total cost.
* Distillation curve: the student's quality against the number of teacher-labelled examples (``pool``), mean
  over seeds with the seed range, one line per distillation setup (teacher, student, gold labels), and the
  teacher's agreement with the gold labels of the pool where they exist.
* Cascade curve: the dev-set quality against the share of queries deferred to the large model, from the
  threshold search each cascade cell recorded (``search.curve``), with the chosen threshold and the test score.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adaptlab.recommend.text import ARM_NAMES
from adaptlab.report.table import fmt_ci, fmt_count, fmt_money, plot_text
from adaptlab.results import CellRecord

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from adaptlab.recommend.text import Recommendation

POOL_OPTION = "pool"
"""The distillation option holding the number of teacher-labelled examples (the curve's x axis)."""


def options_table(rec: Recommendation | None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the options table (none without a measured recommendation)."""
    rows = rec.options if rec is not None else []
    if not rows:
        return [], []
    header = ["option", "variant", "labels used", "quality [95% interval]", "$ / 1k queries", "priced as",
              "one-off $", "total $", "meets target"]
    out = []
    for r in rows:
        meets = {True: "yes", False: "no", None: "-"}[r.get("meets_target")]
        out.append([ARM_NAMES.get(str(r["arm"]), str(r["arm"])) + (" (recommended)" if r.get("chosen") else ""),
                    str(r["variant"]), fmt_count(r.get("labels")), fmt_ci(r["mean"], r["low"], r["high"]),
                    fmt_money(r["usd_per_1k"]), str(r.get("price") or ""), fmt_money(r["one_off"]),
                    fmt_money(r["total"]), meets])
    return header, out


@dataclass
class DistillPoint:
    setup: str
    """The distillation setup without its pool size (one curve)."""
    pool: int
    n_train: int
    mean: float
    low: float
    high: float
    seeds: int
    teacher_agreement: float | None


def _setup(cell: CellRecord) -> str:
    """The variant's name without its pool size (``distill pool=64`` -> ``distill``)."""
    return cell.variant.split(f" {POOL_OPTION}=")[0]


def distill_points(cells: Sequence[CellRecord]) -> list[DistillPoint]:
    """One point per (setup, gold labels, pool size) of the finished distillation cells, over seeds."""
    groups: dict[tuple[str, int, int], list[CellRecord]] = {}
    for c in cells:
        pool = c.options.get(POOL_OPTION)
        if c.ok and c.arm == "distill" and isinstance(pool, int):
            groups.setdefault((_setup(c), c.n_train, pool), []).append(c)
    out = []
    for (setup, n, pool), group in sorted(groups.items()):
        values = [c.value for c in group]
        agree = [a for c in group if isinstance(a := (c.extra.get("search") or {}).get("teacher_agreement"),
                                                   (int, float))]
        out.append(DistillPoint(setup, pool, n, statistics.fmean(values), min(values), max(values), len(group),
                                statistics.fmean(agree) if agree else None))
    return out


def _figure(x: str, y: str, *, log_x: bool = False) -> go.Figure:
    from adaptlab.report.charts import base_figure

    return base_figure(x, y, log_x=log_x)


def teacher_score(cells: Sequence[CellRecord]) -> float | None:
    """The test score of the distillation teacher when the run measured that prompt itself (the same strategy
    and options on the same model role), mean over seeds."""
    for c in cells:
        teacher = c.options.get("teacher") if c.arm == "distill" else None
        if not isinstance(teacher, dict):
            continue
        want = dict(teacher.get("options") or {})
        same = [p.value for p in cells if p.ok and p.family == "prompt" and p.strategy == teacher.get("name")
                and p.extra.get("role") == teacher.get("model")
                and all(p.options.get(k) == v for k, v in want.items())]
        if same:
            return statistics.fmean(same)
    return None


def distill_curve(cells: Sequence[CellRecord], metric: str, teacher_value: float | None = None) -> go.Figure | None:
    """The distillation learning curve (module docstring); None without distillation cells."""
    import plotly.graph_objects as go

    points = distill_points(cells)
    if not points:
        return None
    fig = _figure("teacher-labelled examples (log scale)", metric, log_x=True)
    curves: dict[tuple[str, int], list[DistillPoint]] = {}
    for p in points:
        curves.setdefault((p.setup, p.n_train), []).append(p)
    for (setup, n), pts in curves.items():
        pts.sort(key=lambda p: p.pool)
        name = plot_text(setup + (f" + {n} gold" if n else ""))
        fig.add_trace(go.Scatter(
            x=[p.pool for p in pts], y=[p.mean for p in pts], mode="lines+markers", name=name,
            error_y=dict(type="data", symmetric=False, array=[p.high - p.mean for p in pts],
                         arrayminus=[p.mean - p.low for p in pts]),
            customdata=[[p.seeds, "n/a" if p.teacher_agreement is None else f"{p.teacher_agreement:.3g}"]
                        for p in pts],
            hovertemplate=("%{x} teacher labels: %{y:.3g} (%{customdata[0]} seeds; teacher agreement with gold "
                           "%{customdata[1]})<extra>" + name + "</extra>")))
    if teacher_value is not None:
        fig.add_hline(y=teacher_value, line_dash="dash", line_color="#1f77b4",
                      annotation_text="teacher (prompted) on the test set", annotation_position="bottom right")
    return fig


def _curve_of(cell: CellRecord) -> list[dict[str, Any]]:
    search = cell.extra.get("search") or {}
    curve = search.get("curve") if search.get("kind") == "cascade" else None
    return [p for p in curve if isinstance(p, dict)] if isinstance(curve, list) else []


def cascade_cells(cells: Sequence[CellRecord]) -> list[CellRecord]:
    """Finished cascade cells that recorded their threshold search."""
    return [c for c in cells if c.ok and c.arm == "cascade" and _curve_of(c)]


def cascade_curve(cells: Sequence[CellRecord], metric: str) -> go.Figure | None:
    """Dev quality vs share deferred for each cascade cell's threshold search (module docstring)."""
    import plotly.graph_objects as go

    found = cascade_cells(cells)
    if not found:
        return None
    fig = _figure("share of queries deferred to the large model", f"dev {metric}")
    for c in found:
        curve = sorted(_curve_of(c), key=lambda p: float(p.get("deferred", 0.0)))
        name = plot_text(f"{c.variant} n={c.n_train} seed={c.seed}")
        fig.add_trace(go.Scatter(
            x=[p.get("deferred") for p in curve], y=[p.get("accuracy") for p in curve], mode="lines",
            name=name, customdata=[[p.get("threshold"), p.get("seconds_per_query"), p.get("tokens_per_query")]
                                   for p in curve],
            hovertemplate=("deferred %{x:.0%}: dev %{y:.3g} (threshold %{customdata[0]:.3g}, %{customdata[1]:.3g} "
                           "s and %{customdata[2]:.3g} large-model tokens per query)<extra>" + name + "</extra>")))
        search = c.extra.get("search") or {}
        deferred = (c.query_info() or {}).get("deferred_fraction")
        if isinstance(deferred, (int, float)):
            fig.add_trace(go.Scatter(
                x=[deferred], y=[c.value], mode="markers", marker=dict(symbol="star", size=13),
                name=plot_text(f"{c.variant} seed={c.seed}: test at threshold {search.get('threshold', 0):.3g}"),
                hovertemplate="test: deferred %{x:.0%}, " + metric + " %{y:.3g}<extra></extra>"))
    return fig


def cascade_notes(cells: Sequence[CellRecord]) -> list[str]:
    """One line per cascade cell: the chosen threshold, how it was chosen, deferral and quality."""
    out = []
    for c in cascade_cells(cells):
        s = c.extra.get("search") or {}
        q = c.query_info()
        deferred = q.get("deferred_fraction")
        why = "the fewest deferrals meeting the target on dev" if s.get("chosen_by") == "target" else \
            "the best dev quality"
        out.append(f"{c.variant} (n={c.n_train}, seed {c.seed}): threshold {s.get('threshold', float('nan')):.3g}, "
                   f"{why} ({s.get('dev_n', '?')} dev labels); on the test set "
                   + (f"{deferred:.0%} deferred, " if isinstance(deferred, (int, float)) else "")
                   + f"{c.metric} {c.value:.3g}.")
    return out
