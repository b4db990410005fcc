"""RUN_DIR/summary.md: the report's findings as Markdown for a pull request or a wiki page.

Every piece of text that can come from the data or the user (variant names, labels, inputs,
errors, and the recommendation sentences that quote them) goes through `md_escape`, which turns
``<``/``>``/``&`` into entities and backslash-escapes Markdown syntax, so nothing renders as markup.
"""

from __future__ import annotations

from adaptlab.report.arms import cascade_notes, distill_points, options_table
from adaptlab.report.data import ReportData
from adaptlab.report.html import break_even_text, crossover_notes, significance_text
from adaptlab.report.table import fmt_count, fmt_money, md_escape, shorten

N_SUMMARY_ERRORS = 3


def _table(data: ReportData) -> list[str]:
    if not data.columns:
        return []
    rec = data.recommendation
    heads = [md_escape(p.variant) + (" (recommended)" if rec and rec.choice == p.variant else "")
             for p in data.columns]
    lines = ["| | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for row in data.table:
        label = f"**{md_escape(row.label)}**"
        lines.append(f"| {label} | " + " | ".join(md_escape(v) for v in row.values) + " |")
    return lines


def render_summary(data: ReportData) -> str:
    """The Markdown summary (ends with a newline)."""
    rec, sc = data.recommendation, data.scenario
    out = [f"# adaptlab: {md_escape(data.title)}", ""]
    models = data.experiment.get("models") or {}
    on = ("models " + ", ".join(f"{md_escape(role)} **{md_escape(m.get('name', '?'))}**" for role, m in models.items())
          if models else f"model **{md_escape(data.experiment.get('model', '?'))}**")
    out.append(f"Task **{md_escape(data.experiment.get('task', '?'))}** on {on}, metric **{md_escape(data.metric)}**; "
               f"{len(data.ok_cells)} cells finished, {len(data.failed)} failed. "
               "Full interactive report: `report.html`.")
    out += ["", "## Recommendation", ""]
    if rec is None:
        out.append(f"No recommendation: {md_escape(data.problem or 'no finished cells')}.")
    else:
        basis = "measured on this run" if rec.basis == "measured" else "estimate from published findings"
        out.append(f"**{rec.decision.replace('_', ' ').upper()}** ({basis}): {md_escape(rec.headline)}")
        if rec.decision == "too_close":
            out += ["", "> **Too close to call:** the difference between the best prompt and the best "
                        "fine-tune is within this run's noise; the choice is the cheaper one."]
        if rec.labels_needed:
            out += ["", f"Labels needed in all (projected): **{fmt_count(rec.labels_needed)}**."]
        for title, items in (("Why", rec.reasons), ("What would change it", rec.would_change)):
            if items:
                out += ["", f"### {title}", ""] + [f"- {md_escape(r)}" for r in items]
        best_cell, why = data.best_cell()
        if best_cell is not None:
            out += ["", f"Artifact in `best/` ({md_escape(why)}): {md_escape(best_cell.variant)}, "
                        f"{best_cell.n_train} labels, seed {best_cell.seed}."]
    out += ["", f"Scenario: {fmt_count(sc.queries_per_month)} queries/month for {sc.months:g} months at "
                f"{fmt_money(sc.price_per_hour)}/hour"
                + (f", {md_escape(data.metric)} target {sc.accuracy_target:g}" if sc.accuracy_target is not None
                   else "")
                + (f", latency budget {sc.latency_budget_s:g} s" if sc.latency_budget_s is not None else "")
                + (f", {sc.labels_available} labels on hand" if sc.labels_available is not None else "")
                + "."]
    header, rows = options_table(rec)
    if rows:
        out += ["", "## The options", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in rows]
    for note in cascade_notes(data.ok_cells):
        out += ["", f"- Cascade: {md_escape(note)}"]
    points = distill_points(data.ok_cells)
    if points:
        out += ["", "## Distillation curve", "", "| setup | gold labels | teacher labels | mean | seed range | "
                "teacher agreement |", "|---|---|---|---|---|---|"]
        out += [f"| {md_escape(p.setup)} | {p.n_train} | {p.pool} | {p.mean:.3g} | {p.low:.3g}-{p.high:.3g} | "
                + ("-" if p.teacher_agreement is None else f"{p.teacher_agreement:.3g}") + " |" for p in points]
    table = _table(data)
    if table:
        out += ["", "## Comparison", "",
                "Each column: a variant at the number of labels where it scored best.", ""] + table
    if data.analysis is not None:
        notes = crossover_notes(data)
        if notes:
            out += ["", "## What a prompt is worth in labels", ""] + [f"- {md_escape(n)}" for n in notes]
        out += ["", "## Break-even", "", md_escape(break_even_text(data))]
        sig = significance_text(data)
        if sig:
            out += ["", "## Significance", "", md_escape(sig)]
    reps = [r for r in data.representatives if r.errors]
    if reps:
        out += ["", "## Sample errors", ""]
        for rep in reps:
            out += [f"**{md_escape(rep.title)}: {md_escape(rep.cell.variant)}** "
                    f"({rep.n_wrong} of {rep.n_total} wrong)", "",
                    "| input | gold | predicted |", "|---|---|---|"]
            out += [f"| {md_escape(shorten(e.input, 160))} | {md_escape(shorten(e.gold, 60))} | "
                    f"{md_escape(shorten(e.pred, 60))} |" for e in rep.errors[:N_SUMMARY_ERRORS]]
            out.append("")
    if data.failed:
        out += ([] if out[-1] == "" else [""]) + [
            "## Failed cells", "", "| variant | labels | seed | error |", "|---|---|---|---|"]
        out += [f"| {md_escape(c.variant)} | {c.n_train} | {c.seed} | "
                f"{md_escape(shorten(c.error or 'no metric value', 200))} |" for c in data.failed]
    return "\n".join(out).rstrip() + "\n"
