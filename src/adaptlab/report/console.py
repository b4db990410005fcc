"""The compare results in the terminal: the per-variant table and the prompt-vs-fine-tune headline."""

from __future__ import annotations

import math
from typing import Any, Optional

from rich.markup import escape


def compare_output(records: list, scenario: Any, predictions: Any, *, title: str) -> tuple[Any, list[str], list[str]]:
    """What the CLI shows after a compare: (rich table of every variant, failure lines, headline lines)."""
    from rich import box
    from rich.table import Table

    from adaptlab.analysis import analyze
    from adaptlab.experiment.runner import summarize

    rows = summarize(records, scenario)
    metric = rows[0].metric if rows else "metric"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  caption=f"mean and sd over seeds; $ at {money(scenario.price_per_hour)}/hour; "
                  "p50: median single-query latency"
                  + (", prefix kept (scenario.prefix_cache)" if getattr(scenario, "prefix_cache", False) else ""))
    cells = []
    for r in rows:
        ok = r.seeds > 0
        cells.append([escape(r.variant), str(r.n_train), str(r.seeds) + (f" ({r.failed} failed)" if r.failed else ""),
                      f"{r.mean:.3f}" if ok else "failed", f"{r.std:.3f}" if ok else "-",
                      f"{r.train_seconds:.1f}" if ok else "-", money(r.train_dollars), money(r.dollars_per_1k),
                      f"{r.query_seconds * 1000:.0f}" if ok else "-"])
    headers = ("variant", "n", "seeds", metric, "± sd", "train s", "train $", "$/1k queries", "p50 ms")
    table.add_column(headers[0], min_width=12, overflow="fold")  # the variant name wraps
    for i, col in enumerate(headers[1:], 1):  # numbers keep their width
        table.add_column(col, justify="right", min_width=max([len(c[i]) for c in cells] + [1]))
    for c in cells:
        table.add_row(*c)
    failed = [f"[red]failed[/red] {escape(rec.variant)} n={rec.n_train} seed={rec.seed}: {escape(rec.error or '')}"
              for rec in records if rec.status == "failed"]
    return table, failed, headline(analyze(records, predictions, scenario), scenario)


def headline(analysis: Any, scenario: Any) -> list[str]:
    """Best prompt vs best fine-tune: metric, $ per 1,000 queries, training $, break-even volume."""
    bp, bf, be = analysis.best_prompt, analysis.best_finetune, analysis.break_even
    metric = analysis.metric or "metric"
    lines = []
    for what, best in (("prompt", bp), ("fine-tune", bf)):
        if best is None:
            lines.append(f"Best {what}: none (no successful {what} cell)")
            continue
        per_1k = 1000 * sum(c.query_cost(scenario) for c in best.cells) / len(best.cells)
        train = sum(c.train_cost(scenario) for c in best.cells) / len(best.cells)
        lines.append(f"Best {what}: [bold]{escape(best.variant)}[/bold] (n={best.n_train}): {metric} "
                     f"{best.mean:.3f} {_spread(best)}, {money(per_1k)} per 1,000 queries, "
                     f"training {money(train)}")
    if be is not None:
        q = be.queries_dollars
        if q is None:
            lines.append("Break-even: never (the fine-tune is not cheaper per query than the prompt)")
        elif q == 0:
            lines.append("Break-even: from the first query (the fine-tune is no dearer to train or to serve)")
        else:
            months = q / scenario.queries_per_month if scenario.queries_per_month else float("inf")
            lines.append(f"Break-even: fine-tuning pays for its training after [bold]{q:,.0f}[/bold] queries "
                         f"({months:.2g} months at {scenario.queries_per_month:,.0f} queries/month)")
    return lines


def money(x: Optional[float]) -> str:
    """Dollars: ``$3.40``, and two significant digits below $1 (``$0.0012``)."""
    if x is None or not math.isfinite(x):
        return "-"
    if x == 0 or abs(x) >= 1:
        return f"${x:,.2f}" if x else "$0"
    if abs(x) < 1e-4:
        return "<$0.0001"
    return f"${x:.{max(2, 1 - math.floor(math.log10(abs(x))))}f}"


def _spread(best: Any) -> str:
    """Min-max over seeds, or the 95% bootstrap CI when there is a single seed."""
    if len(best.cells) == 1:
        c = best.cells[0]
        return f"[95% CI {c.ci_low:.3f}-{c.ci_high:.3f}]"
    return f"[seeds {best.low:.3f}-{best.high:.3f}]"
