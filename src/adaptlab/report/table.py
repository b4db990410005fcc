"""Number formatting, escaping, per-variant summaries and the strategy comparison table.

Shared by the HTML report (`adaptlab.report.html`) and the Markdown summary
(`adaptlab.report.summary`), so both show the same numbers formatted the same way.
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptlab.results import CellRecord, Scenario

# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _bad(x: float | None) -> bool:
    return x is None or not isinstance(x, (int, float)) or math.isnan(x) or math.isinf(x)


def fmt_value(x: float | None, digits: int = 3) -> str:
    """A metric value: ``0.853`` (``-`` when missing)."""
    return "-" if _bad(x) else f"{x:.{digits}f}"


def fmt_ci(x: float | None, low: float | None, high: float | None) -> str:
    """``0.853 [0.81, 0.89]``; the interval is left out when unknown."""
    if _bad(x):
        return "-"
    if _bad(low) or _bad(high):
        return fmt_value(x)
    return f"{x:.3f} [{low:.2f}, {high:.2f}]"


def fmt_si(x: float | None, unit: str = "") -> str:
    """``1.2M FLOPs``-style engineering notation."""
    if _bad(x):
        return "-"
    suffix = f" {unit}" if unit else ""
    for scale, prefix in _SI:
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}{suffix}"
    return f"{x:.3g}{suffix}"


def fmt_count(x: float | None) -> str:
    """Query or example counts: ``850``, ``12k``, ``1.2M``."""
    if _bad(x):
        return "-"
    if abs(x) < 1000:
        return f"{x:,.0f}"
    for scale, prefix in _SI:
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.1f}{prefix}" if v < 10 else f"{v:.0f}{prefix}"
    return f"{x:,.0f}"


def fmt_money(x: float | None) -> str:
    """Dollars with two significant figures below $1: ``$0.0012``, ``$3.40``, ``$1,234``."""
    if _bad(x):
        return "-"
    if x == 0:
        return "$0"
    if abs(x) >= 100:
        return f"${x:,.0f}"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    digits = max(2, 1 - math.floor(math.log10(abs(x))))
    return f"${x:.{min(digits, 10)}f}"


def fmt_seconds(x: float | None) -> str:
    """``12 ms``, ``1.2 s``, ``3.4 min``, ``1.5 h``."""
    if _bad(x):
        return "-"
    if x < 1:
        return f"{x * 1000:.3g} ms"
    if x < 60:
        return f"{x:.1f} s"
    if x < 3600:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def fmt_bytes(x: float | None) -> str:
    if _bad(x) or x is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(x) < 1024 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(x)


def fmt_pct(x: float | None) -> str:
    return "-" if _bad(x) else f"{x * 100:.0f}%"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
"""Enough to keep text inert: with ``[``/``]`` escaped no link or image can form, so ``(``/``!`` may stay."""


def md_escape(text: object) -> str:
    """Dataset (or user) text made inert in Markdown: HTML entities, escaped Markdown syntax, one line."""
    s = _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))
    return " ".join(s.split())


def plot_text(text: object) -> str:
    """Text for plotly labels: plotly.js renders a subset of HTML, so entities keep it literal."""
    return html.escape(str(text), quote=False)


def shorten(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Per-variant summaries
# --------------------------------------------------------------------------------------------


def _mean(xs: Iterable[float | None]) -> float:
    vals = [float(x) for x in xs if not _bad(x)]
    return sum(vals) / len(vals) if vals else float("nan")


@dataclass
class VariantPoint:
    """One strategy variant at one number of labels, aggregated over its seeds."""

    variant: str
    strategy: str
    family: str
    n_train: int
    metric: str
    cells: list[CellRecord]
    mean: float
    low: float
    """Lowest value over seeds."""
    high: float
    ci_low: float
    """The interval the analysis computed for this variant at this size (``interval_method`` says what it is);
    without an analysis, the lowest and highest per-cell 95% bootstrap bounds over the seeds."""
    ci_high: float
    train_seconds: float
    train_flops: float
    train_dollars: float
    query_seconds: float
    query_flops: float
    query_dollars: float
    query_prompt_tokens: float
    peak_memory_bytes: float
    trainable_params: float
    artifact_bytes: float
    labels: float = 0.0
    """Mean labels used over seeds (training + dev labels read)."""
    label_dollars: float = 0.0
    """Mean $ of those labels under the scenario's price per label."""
    interval_method: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.cells)

    @property
    def label(self) -> str:
        return f"{self.variant} (n={self.n_train})"

    def total_cost(self, scenario: Scenario) -> float:
        """$ over the scenario's horizon: serving plus the one-off cost (fit and labels), re-paid at each task
        change (as the recommendation counts it)."""
        queries = scenario.queries_per_month * scenario.months
        trainings = 1.0 + scenario.task_changes_per_year * scenario.months / 12.0
        return queries * self.query_dollars + trainings * (self.train_dollars + self.label_dollars)

    def best_cell(self) -> CellRecord:
        """The seed with the highest value (ties: the first)."""
        return max(self.cells, key=lambda c: c.value)


def variant_points(cells: Sequence[CellRecord], scenario: Scenario,
                   intervals: Callable[[str, int], Any] | None = None) -> list[VariantPoint]:
    """Every (variant, n_train) of the ok cells, aggregated over seeds; ``intervals(variant, n)`` gives the
    analysis' interval for it (an object with ``low``, ``high``, ``method``), or None."""
    groups: dict[tuple[str, int], list[CellRecord]] = defaultdict(list)
    for c in cells:
        if c.ok:
            groups[(c.variant, c.n_train)].append(c)
    points = []
    for (variant, n), cs in groups.items():
        vals = [c.value for c in cs]
        band = intervals(variant, n) if intervals is not None else None
        if band is not None:
            ci_low, ci_high, method = band.low, band.high, band.method
        else:
            ci_low, ci_high = min(c.ci_low for c in cs), max(c.ci_high for c in cs)
            method = ("95% bootstrap over test examples, one seed" if len(cs) == 1 else
                      "lowest and highest per-seed 95% bootstrap bounds")
        points.append(VariantPoint(
            variant=variant, strategy=cs[0].strategy, family=cs[0].family, n_train=n,
            metric=cs[0].metric, cells=cs, mean=_mean(vals), low=min(vals), high=max(vals),
            ci_low=ci_low, ci_high=ci_high, interval_method=method,
            labels=_mean(c.labels for c in cs), label_dollars=_mean(c.label_cost(scenario) for c in cs),
            train_seconds=_mean(c.train_seconds for c in cs),
            train_flops=_mean(c.train_flops for c in cs),
            train_dollars=_mean(c.train_cost(scenario) for c in cs),
            query_seconds=_mean(c.query_seconds for c in cs),
            query_flops=_mean(c.query_flops for c in cs),
            query_dollars=_mean(c.query_cost(scenario) for c in cs),
            query_prompt_tokens=_mean(c.query_prompt_tokens for c in cs),
            peak_memory_bytes=_mean(c.peak_memory_bytes for c in cs),
            trainable_params=_mean(c.trainable_params for c in cs),
            artifact_bytes=_mean(c.artifact_bytes for c in cs),
        ))
    return sorted(points, key=lambda p: (p.family != "prompt", p.variant, p.n_train))


def best_points(points: Sequence[VariantPoint]) -> list[VariantPoint]:
    """Each variant at the number of labels where its mean is highest (prompts first, then by mean)."""
    best: dict[str, VariantPoint] = {}
    for p in points:
        cur = best.get(p.variant)
        if cur is None or p.mean > cur.mean or (p.mean == cur.mean and p.n_train < cur.n_train):
            best[p.variant] = p
    return sorted(best.values(), key=lambda p: (p.family != "prompt", -p.mean, p.variant))


def pareto_front(points: Sequence[VariantPoint]) -> list[VariantPoint]:
    """Points no other point beats on both cost per query (lower) and metric (higher), by cost."""
    front: list[VariantPoint] = []
    for p in sorted(points, key=lambda p: (p.query_dollars, -p.mean)):
        if not front or p.mean > front[-1].mean:
            front.append(p)
    return front


# --------------------------------------------------------------------------------------------
# The comparison table
# --------------------------------------------------------------------------------------------


@dataclass
class TableRow:
    group: str
    label: str
    values: list[str]
    note: str = ""


def _training(p: VariantPoint) -> str:
    if p.family == "prompt":
        return "No: weights unchanged" + (" (fit pass only)" if p.train_seconds > 0.5 else "")
    params = f", {fmt_si(p.trainable_params)} trainable params" if not _bad(p.trainable_params) else ""
    return f"Yes: {p.strategy}{params}"


def _labels(p: VariantPoint) -> str:
    used = round(p.labels) if not _bad(p.labels) else p.n_train
    if p.n_train == 0 and used == 0:
        return "0 (none)"
    if used != p.n_train:
        return f"{used:,} ({p.n_train:,} training + {used - p.n_train:,} read on dev)"
    if p.family == "prompt":
        return f"{used:,} (demonstration pool)" if p.strategy != "few_shot" else f"{used:,} (demonstrations)"
    return f"{used:,}"


def _flexibility(p: VariantPoint) -> str:
    if p.family == "prompt":
        return "Edit the prompt; no retraining"
    return f"Retrain to change (~{fmt_seconds(p.train_seconds)})"


def _seed_range(p: VariantPoint) -> str:
    if p.n_seeds == 1:
        return f"{fmt_value(p.mean)} (1 seed)"
    return f"{fmt_value(p.low)} to {fmt_value(p.high)} ({p.n_seeds} seeds)"


def comparison_table(columns: Sequence[VariantPoint], scenario: Scenario) -> list[TableRow]:
    """The prompt-vs-fine-tune comparison, one column per variant (at its best number of labels)."""
    metric = columns[0].metric if columns else "accuracy"
    horizon = (f"Total over {scenario.months:g} months at {fmt_count(scenario.queries_per_month)}"
               " queries/month")
    rows = [
        TableRow("Training", "Training required", [_training(p) for p in columns]),
        TableRow("Data", "Labelled examples used", [_labels(p) for p in columns],
                 "at the size where the variant scored best: training labels and every dev label read"),
        TableRow("Data", "Label cost", [fmt_money(p.label_dollars) for p in columns],
                 f"at {fmt_money(scenario.price_per_label)} per label"),
        TableRow("Compute", "Training cost", [fmt_money(p.train_dollars) for p in columns],
                 f"at {fmt_money(scenario.train_hour_price)}/hour"),
        TableRow("Compute", "Training compute", [fmt_si(p.train_flops, "FLOPs") for p in columns]),
        TableRow("Compute", "Training time", [fmt_seconds(p.train_seconds) for p in columns]),
        TableRow("Compute", "Peak memory", [fmt_bytes(p.peak_memory_bytes) for p in columns]),
        TableRow("Serving", "Cost per 1,000 queries",
                 [fmt_money(p.query_dollars * 1000) for p in columns],
                 f"at {fmt_money(scenario.price_per_hour)}/hour, "
                 + ("batched at the measured best throughput" if scenario.serving == "batched"
                    else "one query at a time") + " (API models: reported tokens x token price)"),
        TableRow("Serving", "Compute per query", [fmt_si(p.query_flops, "FLOPs") for p in columns]),
        TableRow("Serving", "Prompt tokens per query",
                 [fmt_value(p.query_prompt_tokens, 0) for p in columns]),
        TableRow("Serving", "Latency (median, one query)",
                 [fmt_seconds(p.query_seconds) for p in columns],
                 "prompt prefix kept between queries" if scenario.prefix_cache else "each query computed in full"),
        TableRow("Serving", horizon, [fmt_money(p.total_cost(scenario)) for p in columns],
                 "serving + training + labels" + (", re-paid at each task change"
                                                  if scenario.task_changes_per_year else "")),
        TableRow("Flexibility", "Changing the task", [_flexibility(p) for p in columns]),
        TableRow("Flexibility", "Artifact size", [fmt_bytes(p.artifact_bytes) for p in columns]),
        TableRow("Quality", f"{metric} [95% CI]",
                 [fmt_ci(p.mean, p.ci_low, p.ci_high) for p in columns],
                 "mean over seeds; interval: " + "; ".join(sorted({p.interval_method for p in columns
                                                                  if p.interval_method}))),
        TableRow("Quality", "Range over seeds",
                 [_seed_range(p) for p in columns]),
    ]
    return rows
