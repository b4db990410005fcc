"""``adaptlab models`` and ``adaptlab validate``: what is available, and whether a task's data is sound."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from adaptlab.cli.app import DEFAULT_MODEL, app, console, err_console, human_bytes
from adaptlab.errors import AdaptlabError


@app.command("models")
def models_cmd() -> None:
    """List the known model names, whether each is available here, size and parameter count."""
    from rich.table import Table

    from adaptlab.models.info import list_models

    table = Table(title="Models")
    for col in ("name", "kind", "available", "size", "parameters", "note"):
        table.add_column(col)
    for info in list_models():
        table.add_row(
            info.name,
            info.kind,
            "[green]yes[/green]" if info.available else "[red]no[/red]",
            human_bytes(info.size_bytes),
            f"{info.params / 1e6:.1f}M" if info.params else "-",
            info.note,
        )
    console.print(table)


@app.command("validate")
def validate_cmd(
    task_path: Path = typer.Argument(..., help="Task YAML file."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="Model whose tokenizer and context length to check against."
    ),
    no_model: bool = typer.Option(False, "--no-model", help="Skip the context-length check."),
) -> None:
    """Check a task's data: rows, labels, duplicates, leakage, empty and over-long inputs."""
    from adaptlab.cli.render import validation_report
    from adaptlab.data import load_task
    from adaptlab.data.validate import validate_task

    task = load_task(task_path)
    tokenizer = max_tokens = None
    if not no_model:
        from adaptlab.models import load_tokenizer
        from adaptlab.models.info import context_length

        try:
            tokenizer = load_tokenizer(model)
            max_tokens = context_length(model)
        except AdaptlabError as exc:
            err_console.print("[yellow]warning:[/yellow] context check skipped: " + escape(exc.one_line()))
    report = validate_task(task, tokenizer=tokenizer, max_tokens=max_tokens)
    for renderable in validation_report(report):
        console.print(renderable)
    raise typer.Exit(0 if report.ok else 1)
