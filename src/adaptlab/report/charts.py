"""The report's plotly figures. Every function returns a `plotly.graph_objects.Figure` (or None
when the run has nothing to draw); `adaptlab.report.html` embeds them. Dataset text that ends up in
a figure (class labels, variant names) passes through `plot_text`, since plotly.js renders a subset
of HTML in labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adaptlab.report.table import (VariantPoint, fmt_count, fmt_money, fmt_value, pareto_front,
                                   plot_text)
from adaptlab.results import Scenario

if TYPE_CHECKING:
    import plotly.graph_objects as go

PROMPT_COLORS = ("#1f77b4", "#2ca02c", "#17becf", "#9467bd", "#0b4f8a", "#6b8e23", "#5f9ea0")
FINETUNE_COLORS = ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#b8860b", "#a0522d", "#c71585")
HEIGHT = 440
FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=13)


def color_map(variants: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A stable colour per variant: blues/greens for prompts, reds/oranges for fine-tunes."""
    colors: dict[str, str] = {}
    counts = {"prompt": 0, "finetune": 0}
    for variant, family in sorted(set(variants), key=lambda vf: (vf[1] != "prompt", vf[0])):
        palette = PROMPT_COLORS if family == "prompt" else FINETUNE_COLORS
        colors[variant] = palette[counts[family] % len(palette)]
        counts[family] += 1
    return colors


def base_figure(title_x: str, title_y: str, *, log_x: bool = False, log_y: bool = False,
            height: int = HEIGHT) -> "go.Figure":
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(
        template="plotly_white", height=height, font=FONT, margin=dict(l=70, r=30, t=56, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        hoverlabel=dict(namelength=-1),
    )
    fig.update_xaxes(title_text=title_x, showline=True, linecolor="#888", zeroline=False)
    fig.update_yaxes(title_text=title_y, showline=True, linecolor="#888", zeroline=False, automargin=True)
    if log_x:  # otherwise plotly infers linear or categorical from the data
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _money_ticks(fig: "go.Figure", axis: str, lo: float, hi: float, log: bool) -> None:
    """Dollar tick labels ($0.0005, $0.001, ...) on 1-2-5 values (decades only for wide ranges)."""
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    if not log or lo <= 0 or hi <= lo:
        update(tickprefix="$", exponentformat="none")
        return
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    steps = (1,) if math.log10(hi / lo) > 3 else (1, 2, 5)
    vals = [m * 10.0 ** k for k in decades for m in steps if lo <= m * 10.0 ** k <= hi]
    text = [fmt_money(v) for v in vals]
    update(tickvals=vals, ticktext=[t.rstrip("0") if "." in t and len(t.split(".")[1]) > 2 else t
                                    for t in text], tickangle=0)


def _ax(x: float, log: bool) -> float:
    """Annotation coordinate on an axis: plotly.js wants log10 on log axes (shapes take data values)."""
    return math.log10(x) if log else x


def _used(point: Any) -> float:
    """A curve point's labels used (training + dev labels read), ``n_train`` when not recorded."""
    labels = getattr(point, "labels", None)
    return float(labels) if isinstance(labels, (int, float)) and math.isfinite(labels) else float(point.n_train)


def learning_curves(curves: Sequence[Any], colors: dict[str, str], metric: str,
                    best_prompt: Any = None, crossovers: Sequence[Any] = (),
                    baseline: Any = None) -> "go.Figure | None":
    """Mean metric vs labels used (training + dev labels read) per variant, both arms; shaded min-max over seeds,
    crossovers and the majority-class baseline marked."""
    import plotly.graph_objects as go

    curves = [c for c in curves if c.points]
    if not curves:
        return None
    positive = sorted({round(_used(p)) for c in curves for p in c.points if _used(p) > 0})
    log_x = bool(positive)
    lo_x, hi_x = (positive[0] / 1.6, positive[-1] * 1.6) if positive else (-0.5, 0.5)
    fig = base_figure("labels used: training + dev labels read" + (" (log scale)" if log_x else ""),
                  metric, log_x=log_x)
    ys = [v for c in curves for p in c.points for v in (p.low, p.high)]
    for curve in curves:
        color = colors.get(curve.variant, "#444444")
        name = plot_text(curve.variant)
        pts = sorted(curve.points, key=_used)
        flat = log_x and all(_used(p) == 0 for p in pts)
        if flat:  # no labels at all (zero-shot): a level across the whole axis
            p = pts[0]
            xs, means, lows, highs = [lo_x, hi_x], [p.mean] * 2, [p.low] * 2, [p.high] * 2
            dash, mode = "dot", "lines"
        else:
            pts = [p for p in pts if _used(p) > 0 or not log_x]
            xs = [_used(p) for p in pts]
            means, lows, highs = [p.mean for p in pts], [p.low for p in pts], [p.high for p in pts]
            dash, mode = ("solid" if curve.family == "finetune" else "dash"), "lines+markers"
        single = len(xs) == 1
        if not single and any(h > lo for h, lo in zip(highs, lows, strict=True)):
            fig.add_trace(go.Scatter(
                x=xs + xs[::-1], y=highs + lows[::-1], fill="toself", fillcolor=_rgba(color, 0.14),
                mode="lines", line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name))
        seeds = [p.n_seeds for p in pts] * (2 if flat else 1)
        trained = [p.n_train for p in pts] * (2 if flat else 1)
        fig.add_trace(go.Scatter(
            x=xs, y=means, mode=mode, name=name + (" (no labels)" if flat else ""), legendgroup=name,
            line=dict(color=color, dash=dash, width=2.5), marker=dict(size=9 if single else 7),
            error_y=dict(type="data", symmetric=False, array=[h - m for h, m in zip(highs, means, strict=True)],
                         arrayminus=[m - lo for m, lo in zip(means, lows, strict=True)], color=color, width=6)
            if single else None,
            customdata=[[lo, hi, s, t] for lo, hi, s, t in zip(lows, highs, seeds[:len(xs)], trained[:len(xs)],
                                                                strict=True)],
            hovertemplate=(name + "<br>%{x:,.0f} labels used (%{customdata[3]} training): %{y:.3f}"
                           "<br>seeds: min %{customdata[0]:.3f}, max %{customdata[1]:.3f} (%{customdata[2]})"
                           "<extra></extra>")))
    if baseline is not None:
        ys.append(baseline.value)
        fig.add_hline(y=baseline.value, line=dict(color="#999", dash="dot", width=1),
                      annotation_text=f"majority class: always {plot_text(baseline.label)} ({fmt_value(baseline.value)})",
                      annotation_position="bottom right", annotation_font_size=11)
    y_lo, y_hi = min(ys), max(ys)
    pad = max(0.02, (y_hi - y_lo) * 0.15)
    fig.update_yaxes(range=[y_lo - pad, y_hi + pad])
    if best_prompt is not None:
        fig.add_hline(y=best_prompt.mean, line=dict(color="#555", dash="dash", width=1),
                      annotation_text=f"best prompt: {plot_text(best_prompt.variant)} "
                                      f"({fmt_value(best_prompt.mean)})",
                      annotation_position="top right", annotation_font_size=12)
    for i, cx in enumerate(c for c in crossovers if getattr(c, "n", None)):
        at = getattr(cx, "labels", None) or cx.n
        if not log_x or at <= 0:
            continue
        color = colors.get(cx.variant, "#444444")
        low, high = getattr(cx, "labels_low", None) or cx.n_low, getattr(cx, "labels_high", None) or cx.n_high
        if low and high and high > low:
            fig.add_vrect(x0=max(low, lo_x), x1=min(high, hi_x),
                          fillcolor=_rgba(color, 0.08), line_width=0, layer="below")
        fig.add_vline(x=at, line=dict(color=color, dash="dashdot", width=1.5))
        fig.add_annotation(x=_ax(at, log_x), y=1 - 0.08 * i, yref="paper", xanchor="left",
                           text=f"{plot_text(cx.variant)} matches the best prompt at ≈{fmt_count(at)} labels used",
                           showarrow=False, font=dict(size=12, color=color),
                           bgcolor="rgba(255,255,255,0.85)")
    if log_x:  # ticks at the label counts the run measured
        fig.update_xaxes(range=[math.log10(lo_x), math.log10(hi_x)], tickvals=positive,
                         ticktext=[f"{n:,}" for n in positive], minor=dict(showgrid=False))
    return fig


def accuracy_vs_cost(points: Sequence[VariantPoint], colors: dict[str, str], metric: str) -> "go.Figure | None":
    """Each variant (at its best n) by cost per 1,000 queries; the Pareto frontier highlighted."""
    import plotly.graph_objects as go

    points = [p for p in points if p.query_dollars >= 0]
    if not points:
        return None
    costs = [p.query_dollars * 1000 for p in points]
    positive = [c for c in costs if c > 0]
    log_x = bool(positive) and len(positive) == len(costs) and max(positive) / min(positive) > 4
    fig = base_figure("cost per 1,000 queries ($" + (", log scale)" if log_x else ")"), metric, log_x=log_x)
    front = pareto_front(points)
    if len(front) > 1:
        fig.add_trace(go.Scatter(
            x=[p.query_dollars * 1000 for p in front], y=[p.mean for p in front], mode="lines",
            line=dict(color="#333", width=1.5, dash="dot", shape="hv"), name="Pareto frontier",
            hoverinfo="skip"))
    for p in points:
        on_front = p in front
        name = plot_text(p.variant)
        fig.add_trace(go.Scatter(
            x=[p.query_dollars * 1000], y=[p.mean], mode="markers+text" if on_front else "markers",
            name=name, text=[name] if on_front else None, textposition="top center",
            textfont=dict(size=12), cliponaxis=False,
            error_y=dict(type="data", symmetric=False, array=[max(0.0, p.ci_high - p.mean)],
                         arrayminus=[max(0.0, p.mean - p.ci_low)], color=colors.get(p.variant)),
            marker=dict(color=colors.get(p.variant, "#444444"), size=15 if on_front else 10,
                        symbol="circle" if p.family == "prompt" else "diamond",
                        line=dict(color="#111" if on_front else "white", width=2 if on_front else 1)),
            hovertemplate=(f"{name} ({p.n_train} labels)<br>{fmt_money(p.query_dollars * 1000)}"
                           " per 1,000 queries<br>%{y:.3f}<extra></extra>")))
    ys = [v for p in points for v in (p.ci_low, p.ci_high, p.mean) if not math.isnan(v)]
    pad = max(0.02, (max(ys) - min(ys)) * 0.2)
    fig.update_yaxes(range=[min(ys) - pad, max(ys) + pad])
    if log_x:
        lo, hi = min(positive) / 1.4, max(positive) * 1.4
        fig.update_xaxes(range=[math.log10(lo), math.log10(hi)])
        _money_ticks(fig, "x", lo, hi, True)
    else:
        fig.update_xaxes(rangemode="tozero")
        _money_ticks(fig, "x", 0, 0, False)
    return fig


def cumulative_cost(break_even: Any, scenario: Scenario) -> "go.Figure | None":
    """Total $ vs queries served for the best prompt and the best fine-tune; break-even marked."""
    import numpy as np
    import plotly.graph_objects as go

    if break_even is None:
        return None
    p_q, f_q = break_even.prompt_query_dollars, break_even.finetune_query_dollars
    p_train = break_even.prompt_train_dollars + (getattr(break_even, "prompt_label_dollars", 0.0) or 0.0)
    train = break_even.train_dollars + (getattr(break_even, "label_dollars", 0.0) or 0.0)
    horizon = scenario.queries_per_month * scenario.months
    marks = [q for q in (horizon, break_even.queries_dollars) if q]
    hi = max([1e4] + [m * 10 for m in marks])
    qs = np.logspace(1, math.log10(hi), 240)
    prompt_cost, ft_cost = p_train + qs * p_q, train + qs * f_q
    positive = bool(np.all(prompt_cost > 0) and np.all(ft_cost > 0))
    fig = base_figure("queries served (log scale)", "total cost" + (" (log scale)" if positive else ""),
                  log_x=True, log_y=positive)
    ys_all = np.concatenate([prompt_cost, ft_cost])
    _money_ticks(fig, "y", float(ys_all.min()), float(ys_all.max()), positive)
    for name, ys, color, dash in ((break_even.prompt, prompt_cost, PROMPT_COLORS[0], "dash"),
                                  (break_even.finetune, ft_cost, FINETUNE_COLORS[0], "solid")):
        fig.add_trace(go.Scatter(
            x=qs, y=ys, mode="lines", name=plot_text(name), line=dict(color=color, width=2.5, dash=dash),
            hovertemplate=plot_text(name) + "<br>%{x:,.0f} queries: $%{y:,.4g}<extra></extra>"))
    if horizon > 0:
        fig.add_vline(x=horizon, line=dict(color="#777", dash="dot", width=1.5))
        fig.add_annotation(x=math.log10(horizon), y=0.02, yref="paper", xanchor="right", yanchor="bottom",
                           showarrow=False, text=f"your volume: {fmt_count(horizon)} queries"
                           f" in {scenario.months:g} months", font=dict(size=12, color="#555"),
                           bgcolor="rgba(255,255,255,0.85)")
    q = break_even.queries_dollars
    if q is not None and q > 0:
        y = train + q * f_q
        fig.add_vline(x=q, line=dict(color="#111", dash="dashdot", width=1.5))
        fig.add_trace(go.Scatter(x=[q], y=[y], mode="markers", name="break-even",
                                 marker=dict(size=12, color="#111", symbol="x"),
                                 hovertemplate=f"break-even: {fmt_count(q)} queries, {fmt_money(y)}"
                                               "<extra></extra>"))
        fig.add_annotation(x=math.log10(q), y=0.97, yref="paper", xanchor="left", showarrow=False,
                           text=f" break-even ≈ {fmt_count(q)} queries", font=dict(size=12),
                           bgcolor="rgba(255,255,255,0.85)")
    return fig


def per_class_f1(reports: dict[str, dict]) -> "go.Figure | None":
    """Horizontal grouped bars of per-class F1: one row per class, one bar per model."""
    import plotly.graph_objects as go

    reports = {k: r for k, r in reports.items() if r and r.get("per_class")}
    if not reports:
        return None
    labels = list(next(iter(reports.values()))["per_class"])
    height = max(320, 110 + len(labels) * 22 * (len(reports) + 0.6))
    fig = base_figure("F1 on the test set (0 to 1, higher is better)", "", height=int(height))
    colors = iter((PROMPT_COLORS[0], FINETUNE_COLORS[0], PROMPT_COLORS[1], FINETUNE_COLORS[1]))
    for name, rep in reports.items():
        pc = rep["per_class"]
        fig.add_trace(go.Bar(
            y=[plot_text(lab) for lab in labels], x=[pc.get(lab, {}).get("f1", 0.0) for lab in labels],
            orientation="h", name=plot_text(name), marker_color=next(colors),
            text=[f"{pc.get(lab, {}).get('f1', 0.0):.2f}" for lab in labels], textposition="outside",
            cliponaxis=False,
            customdata=[[pc.get(lab, {}).get("precision", 0), pc.get(lab, {}).get("recall", 0),
                         pc.get(lab, {}).get("support", 0)] for lab in labels],
            hovertemplate=("%{y}: F1 %{x:.2f}<br>precision %{customdata[0]:.2f}, recall "
                           "%{customdata[1]:.2f}, %{customdata[2]} examples<extra>"
                           + plot_text(name) + "</extra>")))
    fig.update_layout(barmode="group", bargap=0.25, legend=dict(traceorder="normal"))
    fig.update_xaxes(range=[0, 1.08])
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def confusion(report: dict | None, title: str) -> "go.Figure | None":
    """Heatmap of true vs predicted class: colour = share of the true class, text = counts."""
    import plotly.graph_objects as go

    if not report or not report.get("confusion"):
        return None
    labels = [plot_text(lab) for lab in report["labels"]]
    counts = [list(row) for row in report["confusion"]]
    cols = list(labels)
    other = report.get("confusion_other") or []
    if any(other):
        cols.append("(not a label)")
        counts = [row + [other[i]] for i, row in enumerate(counts)]
    shares = [[v / max(1, sum(row)) for v in row] for row in counts]
    size = max(380, 70 + 46 * len(labels))
    fig = base_figure("predicted class", "true class", height=size)
    fig.add_trace(go.Heatmap(
        z=shares, x=cols, y=labels, text=counts, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1, colorbar=dict(title=dict(text="share of<br>true class"), thickness=12),
        hovertemplate="true %{y}, predicted %{x}: %{text} (%{z:.0%})<extra>" + plot_text(title)
                      + "</extra>"))
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(tickangle=-30 if len(cols) > 4 else 0, automargin=True)
    fig.update_layout(margin=dict(t=40))
    return fig


def sensitivity(items: Sequence[Any], colors: dict[str, str], metric: str) -> "go.Figure | None":
    """Box + points of the metric per strategy across seeds or prompt templates."""
    import plotly.graph_objects as go

    items = [s for s in items if len(getattr(s, "values", [])) > 1]
    if not items:
        return None
    fig = base_figure("", metric, height=max(360, HEIGHT - 40))
    for s in items:
        label = plot_text(f"{s.strategy} (across {s.across})")
        fig.add_trace(go.Box(
            y=list(s.values), name=label, boxpoints="all", jitter=0.4, pointpos=0,
            marker=dict(color=colors.get(s.strategy, PROMPT_COLORS[0]), size=7),
            line=dict(color=colors.get(s.strategy, PROMPT_COLORS[0])),
            hovertemplate=label + ": %{y:.3f}<extra></extra>"))
    fig.update_layout(showlegend=False, boxgap=max(0.3, 1.0 - 0.2 * len(items)))
    fig.update_xaxes(automargin=True)
    return fig
