"""The `adaptlab` command line: a thin typer + rich layer over library functions.

Heavy libraries are imported inside the commands so that `adaptlab --help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from adaptlab.errors import AdaptlabError

app = typer.Typer(
    name="adaptlab",
    help="Prompt it or fine-tune it? Adapt an LLM both ways, measure both, and get a recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL = "smollm2-135m-instruct"


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command("models")
def models_cmd() -> None:
    """List the known model names, whether each is available here, size and parameter count."""
    from rich.table import Table

    from adaptlab.models import list_models

    table = Table(title="Models")
    for col in ("name", "kind", "available", "size", "parameters", "note"):
        table.add_column(col)
    for info in list_models():
        table.add_row(
            info.name,
            info.kind,
            "[green]yes[/green]" if info.available else "[red]no[/red]",
            _human_bytes(info.size_bytes),
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
    from adaptlab.tasks import load_task
    from adaptlab.validate import render_report, validate_task

    task = load_task(task_path)
    tokenizer = max_tokens = None
    if not no_model:
        from adaptlab.models import context_length, load_tokenizer

        try:
            tokenizer = load_tokenizer(model)
            max_tokens = context_length(model)
        except AdaptlabError as exc:
            err_console.print("[yellow]warning:[/yellow] context check skipped: " + escape(exc.one_line()))
    report = validate_task(task, tokenizer=tokenizer, max_tokens=max_tokens)
    for renderable in render_report(report):
        console.print(renderable)
    raise typer.Exit(0 if report.ok else 1)


def _human_bytes(n: Optional[int]) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main() -> None:
    """Console-script entry point: user errors become one line and a non-zero exit."""
    debug = "--debug" in sys.argv
    try:
        app()
    except AdaptlabError as exc:
        if debug:
            raise
        err_console.print("[red]error:[/red] " + escape(exc.one_line()), highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
