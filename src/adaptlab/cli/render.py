"""Rich renderings of library results for the terminal: (what goes to stdout, what goes to stderr)."""

from __future__ import annotations

from typing import Any

from adaptlab.data.validate import ValidationReport


def validation_report(report: ValidationReport) -> tuple[list[Any], list[Any]]:
    """Rich renderables for the CLI: a heading, one table per split, then errors and warnings."""
    from rich.table import Table
    from rich.text import Text

    items: list[Any] = [Text(f"Task {report.task} ({report.type})" + (f" — {report.source}" if report.source else ""),
                             style="bold")]
    classification = report.type == "classification"
    for split, s in report.splits.items():
        table = Table(title=split, title_justify="left", title_style="bold", show_header=False)
        table.add_column("check", style="cyan", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_row("from", f"carved from {s.carved_from}" if s.carved_from else "\n".join(s.sources) or "-")
        table.add_row("rows", f"{s.rows:,}")
        for label, n in s.labels.items():
            table.add_row(f"label {label}", f"{n:,} ({n / s.rows:.1%})" if s.rows else "0")
        for label, n in s.unknown_labels.items():
            table.add_row(f"unknown label {label}", Text(f"{n:,}", style="red"))
        checks = [("malformed rows", s.malformed, "red"), ("duplicate inputs", s.duplicates, "yellow"),
                  ("duplicate ids", s.duplicate_ids, "yellow"), ("empty inputs", s.empty_inputs, "yellow")]
        if classification:
            checks.insert(0, ("missing labels", s.missing_labels, "red"))
        else:
            checks.append(("empty targets", s.empty_targets, "yellow"))
        if report.max_tokens:
            checks.append((f"inputs over {report.max_tokens} tokens", s.too_long, "yellow"))
        checks += [(f"also in {o} (leakage)", n, "yellow") for o, n in s.overlap.items()]
        checks += [(f"missing field {f}", n, "yellow") for f, n in s.missing_fields.items()]
        for name, n, style in checks:
            table.add_row(name, Text(f"{n:,}", style=style if n else "green"))
        if s.max_input_tokens is not None:
            table.add_row("longest input (tokens)", f"{s.max_input_tokens:,}")
        items.append(table)
    problems = [Text(f"error: {e}", style="red") for e in report.errors]
    problems += [Text(f"warning: {w}", style="yellow") for w in report.warnings]
    summary = ("OK" if report.ok else f"{len(report.errors)} error(s)") + f", {len(report.warnings)} warning(s)"
    items.append(Text(summary, style="bold green" if report.ok else "bold red"))
    return items, problems
