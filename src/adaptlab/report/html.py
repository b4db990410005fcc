"""RUN_DIR/report.html: one self-contained page (styles and plotly.js inlined once, no network).

Rendered by jinja2 with autoescape on, so every piece of dataset text (inputs, labels, variant
names, error messages) is HTML-escaped; figures are serialised by ``plotly.io.to_html``, whose
JSON escapes ``<`` as ``\\u003c``, so no data can close the ``<script>`` it sits in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from adaptlab.report import arms, charts
from adaptlab.recommend.text import fmt_p
from adaptlab.report.data import ReportData
from adaptlab.report.table import (fmt_ci, fmt_count, fmt_money, fmt_seconds, fmt_value,
                                   shorten)

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
               "toImageButtonOptions": {"format": "png", "scale": 2}}


@dataclass
class Chart:
    id: str
    section: str
    title: str
    caption: str
    html: Markup
    notes: list[str]


def _chart(fig: Any, id_: str, section: str, title: str, caption: str,
           notes: list[str] | None = None) -> Chart | None:
    import plotly.io as pio

    if fig is None:
        return None
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=id_, config=PLOT_CONFIG,
                      default_width="100%", validate=True)
    return Chart(id_, section, title, caption, Markup(div), notes or [])  # plotly.io escapes "<" in its JSON


def _duration(months: float) -> str:
    if months >= 24:
        return f"{months / 12:.1f} years"
    if months >= 1:
        return f"{months:.1f} months"
    days = months * 30.4
    return f"{days:.1f} days" if days >= 1 else f"{days * 24:.1f} hours"


def break_even_text(data: ReportData) -> str:
    """The break-even sentence: the recommendation's (the same the terminal shows), else the one of the best
    fine-tune against the best prompt."""
    rec = data.recommendation
    if rec is not None and rec.break_even:
        return rec.break_even
    be = data.analysis.break_even if data.analysis else None
    if be is None:
        return "No break-even: the run needs both a finished prompt and a finished fine-tune."
    q = be.queries_dollars
    no_labels = be.queries_dollars_no_labels
    labels = ((f" (without the label price: ≈{fmt_count(no_labels)} queries)" if no_labels is not None
               else " (without the label price: never)")
              if be.label_dollars or be.prompt_label_dollars else "")
    if q is None:
        return (f"{be.finetune} costs more per query than {be.prompt}, so the prompt stays cheaper at "
                "any query volume.")
    if q == 0:
        return f"{be.finetune} is cheaper than {be.prompt} from the first query."
    sc = data.scenario
    when = (f" (≈{_duration(q / sc.queries_per_month)} at {fmt_count(sc.queries_per_month)} queries/month"
            if sc.queries_per_month > 0 else " (")
    when += f"; over {sc.months:g} months: {fmt_count(q / sc.months)} queries/month)" if sc.months > 0 else ")"
    when = "" if when == " ()" else when
    return (f"Above ≈{fmt_count(q)} queries in total{when}{labels}, {be.finetune} is cheaper than {be.prompt}: "
            f"its one-off cost {fmt_money(be.train_dollars + be.label_dollars)} is paid back by saving "
            f"{fmt_money((be.prompt_query_dollars - be.finetune_query_dollars) * 1000)} per 1,000 queries.")


def significance_text(data: ReportData) -> str | None:
    sig = data.analysis.significance if data.analysis else None
    if sig is None:
        notes = [n for n in (data.analysis.notes if data.analysis else []) if "significance" in n]
        return notes[0] if notes else None
    verdict = "significant" if sig.significant else "not significant"
    method = f" ({sig.method})" if getattr(sig, "method", "") else ""
    return (f"{sig.a} minus {sig.b}: {sig.diff:+.3f} [{sig.low:+.3f}, {sig.high:+.3f}] "
            f"{getattr(sig, 'metric', '') or data.metric}, {fmt_p(sig.p_value)}{method}: {verdict} "
            "at the 95% level.")


def crossover_notes(data: ReportData) -> list[str]:
    out = []
    for cx in data.analysis.crossovers if data.analysis else []:
        if cx.n is not None and cx.n_low is not None and cx.n_high is not None and cx.n_high > cx.n_low:
            span = f" (seed range ≈{fmt_count(cx.n_low)} to {fmt_count(cx.n_high)})"
        else:
            span = ""
        out.append(f"{cx.variant} {cx.note}{span}.")
    return out


def format_spread_notes(data: ReportData) -> list[str]:
    """One line per format spread: the range and each format's score."""
    out = []
    for s in data.analysis.sensitivity if data.analysis else []:
        if s.across != "formats":
            continue
        parts = ", ".join(f"{v}: {fmt_value(x)}" for v, x in zip(s.variants, s.values))
        out.append(f"{s.strategy} at {fmt_count(s.n_train)} labels: {fmt_value(min(s.values))} to "
                   f"{fmt_value(max(s.values))} over {len(s.values)} formats (spread {fmt_value(s.spread)}; {parts}).")
    return out


def build_charts(data: ReportData) -> list[Chart]:
    a, sc, metric = data.analysis, data.scenario, data.metric
    if a is None:
        return []
    out: list[Chart | None] = []
    out.append(_chart(
        charts.learning_curves(a.curves, data.colors, metric, a.best_prompt, a.crossovers, a.baseline),
        "chart-curves", "Learning curves", "Learning curves: quality vs labels used, both arms",
        f"Each line is one strategy variant, prompts (dashed: few-, many-shot, kNN) and fine-tunes (solid) alike: "
        f"its mean {metric} over seeds against the labels it used (log scale): its training labels plus every "
        "dev label it read to choose a checkpoint, stop early, calibrate or search a prompt. The shaded band "
        "spans the worst to the best seed. Prompts that use no labels are flat dotted lines; the grey dotted "
        "line is the majority-class baseline. The dashed horizontal line is the best prompt; a vertical "
        "dash-dot line marks where a fine-tune's mean reaches it and stays above (light band: the same crossing "
        "for its best and worst seeds).",
        crossover_notes(data)))
    out.append(_chart(
        charts.accuracy_vs_cost(data.columns, data.colors, metric), "chart-pareto",
        "Quality vs cost", "Quality vs serving cost",
        f"Each marker is one variant at its best number of labels (circles: prompts, diamonds: fine-tunes); "
        f"error bars are the intervals of the comparison table. Cost per 1,000 queries is "
        + ("the measured batched serving time (queries/second at the best batch size found)" if sc.serving == "batched"
           else "the measured median single-query latency")
        + f" x {fmt_money(sc.price_per_hour)}/hour (API models: reported tokens x token price). Up and to the left "
        "is better. "
        "Outlined markers joined by the dotted staircase are the Pareto frontier: no other variant is both "
        "cheaper and better than them."))
    if a.break_even is not None:
        out.append(_chart(
            charts.cumulative_cost(a.break_even, sc), "chart-cost", "Cost vs query volume",
            "Total cost vs query volume",
            f"Total spend as queries accumulate: the one-off cost (adaptation compute and labels) plus the "
            "per-query serving cost, "
            f"for the best prompt ({a.break_even.prompt}) and the best fine-tune ({a.break_even.finetune}). "
            "Both axes are logarithmic. Where the lines cross is the break-even; the dotted line is your "
            f"expected volume ({fmt_count(sc.queries_per_month)} queries/month for {sc.months:g} months).",
            [break_even_text(data)]))
    reports = {r.title + f": {r.cell.variant}": r.cell.report for r in data.representatives}
    out.append(_chart(
        charts.per_class_f1(reports), "chart-classes", "Per-class results", "Per-class F1",
        "F1 for each class on the test set, for the highest-scoring seed of the best prompt and of the best "
        "fine-tune. Hover a bar for precision, recall and the number of test examples of that class. A class "
        "far below the others is where to look for missing labels or confusable names."))
    for i, rep in enumerate(data.representatives):
        out.append(_chart(
            charts.confusion(rep.cell.report, rep.title), f"chart-confusion-{i}", "Per-class results",
            f"Confusion matrix: {rep.title.lower()} ({rep.cell.variant}, {rep.cell.n_train} labels, "
            f"seed {rep.cell.seed})",
            "Rows are the true class, columns the predicted class; numbers count test examples and the "
            "colour is the share of the true class (the diagonal is correct). '(not a label)' counts "
            "answers outside the label set."))
    out.append(_chart(
        charts.sensitivity([s for s in a.sensitivity if s.across == "formats"], data.colors, metric),
        "chart-formats", "Prompt sensitivity", "Format spread",
        f"Spread of {metric} when only the prompt's format changes (chat template vs plain text, instruction "
        "wording, answer prefix, demonstration order), as FormatSpread (Sclar et al. 2024) reports it: each dot "
        "is one format (mean over seeds). The range, not only the best format, is what a new prompt can expect.",
        format_spread_notes(data)))
    out.append(_chart(
        charts.sensitivity([s for s in a.sensitivity if s.across == "seeds"], data.colors, metric),
        "chart-sensitivity", "Prompt sensitivity", "Spread across seeds",
        f"Spread of {metric} when only the seed changes (it picks the demonstrations and their order). Each dot is "
        "one run; a tall box means the result depends on the luck of the draw, so a single run of that setup is "
        "not to be trusted."))
    out.append(_chart(
        arms.distill_curve(data.ok_cells, metric, arms.teacher_score(data.ok_cells)), "chart-distill",
        "Distillation and cascades", "Distillation: the student's quality vs teacher-labelled examples",
        f"Each line is one distillation setup (teacher prompt, student fine-tune, gold labels mixed in): the "
        f"student's mean {metric} over seeds (bars: worst to best seed) against the number of unlabelled inputs "
        "the teacher labelled (log scale). The dashed line is the teacher prompt's own test score where the run "
        "measured it. Hover a point for the teacher's agreement with the gold labels of its pool."))
    out.append(_chart(
        arms.cascade_curve(data.ok_cells, metric), "chart-cascade", "Distillation and cascades",
        "Cascade: quality vs share deferred to the large model",
        f"Each line is one cascade cell's threshold search on dev labels (counted in its labels used): dev {metric} "
        "when the small model answers only above a confidence threshold and the large model answers the rest, "
        "against the share deferred (the cost driver: every deferred query pays the large model). Stars are "
        "the test-set result at the chosen threshold.", arms.cascade_notes(data.ok_cells)))
    return [c for c in out if c is not None]


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def render_html(data: ReportData) -> str:
    """The full report page."""
    import jinja2
    import plotly.offline

    env = jinja2.Environment(loader=jinja2.PackageLoader("adaptlab.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(value=fmt_value, ci=fmt_ci, money=fmt_money, seconds=fmt_seconds, count=fmt_count,
                       shorten=shorten)
    chart_list = build_charts(data)
    plotlyjs = plotly.offline.get_plotlyjs() if chart_list else ""
    if "</script" in plotlyjs.lower():  # never expected; would break the inlined script tag
        plotlyjs = plotlyjs.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    best_cell, best_why = data.best_cell()
    sig = data.analysis.significance if data.analysis else None
    options_header, options_rows = arms.options_table(data.recommendation)
    return env.get_template(TEMPLATE).render(
        options_header=options_header, options_rows=options_rows, d=data, rec=data.recommendation, a=data.analysis, sc=data.scenario, charts=chart_list,
        plotlyjs=Markup(plotlyjs),  # plotly.js itself
        break_even=break_even_text(data) if data.analysis else None, significance=significance_text(data),
        sig=sig, crossovers=crossover_notes(data), best_cell=best_cell, best_why=best_why,
        experiment_json=_pretty(data.experiment), environment_json=_pretty(data.environment),
        scenario_json=_pretty(data.scenario.to_dict()))
