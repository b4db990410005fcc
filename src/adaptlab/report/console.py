"""The compare results in the terminal: the per-variant table and the prompt-vs-fine-tune headline, and tables
that fit the terminal (`fitted_table`: words are never split; low-priority columns go first when space is short)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from rich.markup import escape

from adaptlab.recommend.text import fmt_metric


@dataclass
class Column:
    """A table column: its header, cells, alignment, whether it may wrap at spaces, and its priority (columns of
    lower priority are dropped first when the table does not fit)."""

    header: str
    cells: list[str]
    justify: str = "left"
    wrap: bool = False
    priority: int = 0


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(w) for t in texts for w in t.split()), default=1)


def fitted_table(columns: Sequence[Column], width: int) -> Any:
    """A rich Table of ``columns`` no wider than ``width``: wrapping columns wrap at spaces only (never inside a
    word), the others never wrap; while it cannot fit, the lowest-priority column is dropped (the first column
    always stays)."""
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    def build(kept: list[Column]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
        for col in kept:
            texts = col.cells + [col.header]
            if col.wrap:
                table.add_column(col.header, justify=col.justify, overflow="fold", min_width=_longest_word(texts))
            else:
                table.add_column(col.header, justify=col.justify, no_wrap=True, min_width=max(map(len, texts)))
        for i in range(max((len(c.cells) for c in kept), default=0)):
            table.add_row(*(col.cells[i] for col in kept))
        return table

    wide = Console(width=10_000)  # measured unconstrained: the smallest width each layout can take
    kept = list(columns)
    table = build(kept)
    while Measurement.get(wide, wide.options, table).minimum > width and len(kept) > 1:
        kept.remove(min(kept[1:], key=lambda c: c.priority))
        table = build(kept)
    return table


def compare_output(records: list, scenario: Any, predictions: Any, *, title: str,
                   width: int = 80) -> tuple[list[Any], list[str], list[str]]:
    """What the CLI shows after a compare: (the title, a table of every variant no wider than ``width`` and its
    legend; failure lines; headline lines)."""
    from rich.text import Text

    from adaptlab.analysis import analyze
    from adaptlab.experiment.runner import summarize

    rows = summarize(records, scenario)
    metric = rows[0].metric if rows else "metric"
    ok = [r.seeds > 0 for r in rows]
    spec = [  # header, cell, priority (lower: dropped first when the terminal is narrow)
        ("n", lambda r, k: str(r.n_train), 9),
        ("seeds", lambda r, k: str(r.seeds) + (f" ({r.failed} failed)" if r.failed else ""), 3),
        (metric, lambda r, k: f"{r.mean:.3f}" if k else "failed", 10),
        ("± sd", lambda r, k: f"{r.std:.3f}" if k else "-", 6),
        ("train s", lambda r, k: f"{r.train_seconds:.1f}" if k else "-", 2),
        ("train $", lambda r, k: money(r.train_dollars), 4),
        ("$/1k q", lambda r, k: money(r.dollars_per_1k), 7),
        ("p50 ms", lambda r, k: f"{r.query_seconds * 1000:.0f}" if k else "-", 5),
    ]
    columns = [Column("variant", [escape(r.variant) for r in rows], wrap=True, priority=99)]
    columns += [Column(h, [cell(r, k) for r, k in zip(rows, ok)], justify="right", priority=p) for h, cell, p in spec]
    caption = (f"mean and sd over seeds; $ at {money(scenario.price_per_hour)}/hour; $/1k q: per 1,000 queries; "
               "p50: median single-query latency"
               + (", prompt prefix kept by the server" if getattr(scenario, "prefix_cache", False) else ""))
    table = fitted_table(columns, width)
    shown = [Text(title, style="bold"), table, Text(caption, style="dim")]
    failed = [f"[red]failed[/red] {escape(rec.variant)} n={rec.n_train} seed={rec.seed}: {escape(rec.error or '')}"
              for rec in records if rec.status == "failed"]
    return shown, failed, headline(analyze(records, predictions, scenario), scenario)


def headline(analysis: Any, scenario: Any) -> list[str]:
    """Best prompt vs best fine-tune: metric, $ per 1,000 queries, training $ (the break-even sentence is the
    recommendation's, printed with it)."""
    bp, bf = analysis.best_prompt, analysis.best_finetune
    metric = analysis.metric or "metric"
    lines = []
    for what, best in (("prompt", bp), ("fine-tune", bf)):
        if best is None:
            lines.append(f"Best {what}: none (no successful {what} cell)")
            continue
        per_1k = 1000 * sum(c.query_cost(scenario) for c in best.cells) / len(best.cells)
        train = sum(c.train_cost(scenario) for c in best.cells) / len(best.cells)
        fmt = (lambda v: fmt_metric(v, metric))
        used = round(sum(c.labels for c in best.cells) / len(best.cells))
        labels = f"{best.n_train} labels" + (f", {used} used with dev" if used != best.n_train else "")
        line = (f"Best {what}: [bold]{escape(best.variant)}[/bold] ({labels}): {metric} "
                f"{fmt(best.mean)} {escape(_spread(analysis, best, fmt))}, {money(per_1k)} per 1,000 queries, "
                f"training {money(train)}")
        flag = analysis.flag(best.variant, best.n_train) if hasattr(analysis, "flag") else None
        if flag is not None:
            line += f" [yellow]no better than guessing: {escape(' and '.join(flag.why))}[/yellow]"
        lines.append(line)
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


def _spread(analysis: Any, best: Any, fmt: Any) -> str:
    """The analysis' interval for the best variant, saying what it is; else the seed range or, for one seed, the
    cell's 95% bootstrap interval over test examples."""
    band = analysis.interval(best.variant, best.n_train) if hasattr(analysis, "interval") else None
    if band is not None:
        return f"[{fmt(band.low)}-{fmt(band.high)}: {band.method}]"
    if len(best.cells) == 1:
        c = best.cells[0]
        return f"[95% CI {fmt(c.ci_low)}-{fmt(c.ci_high)} over test examples]"
    return f"[seed range {fmt(best.low)}-{fmt(best.high)}]"
