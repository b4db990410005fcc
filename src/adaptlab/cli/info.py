"""``adaptlab models`` and ``adaptlab validate``: what is available, and whether a task's data is sound."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from adaptlab.cli.app import DEFAULT_MODEL, app, console, err_console, human_bytes
from adaptlab.errors import AdaptlabError


@app.command("init", short_help="Write a task file for a data file (start here).")
def init_cmd(
    data: str = typer.Argument(..., help="Data file (CSV, TSV, JSONL, Parquet) or a Hugging Face dataset name."),
    text: Optional[str] = typer.Option(None, "--text", help="Column of the input text (default: inferred)."),
    label: Optional[str] = typer.Option(None, "--label", help="Column of the label (default: inferred)."),
    target: Optional[str] = typer.Option(None, "--target", help="Column of the output text: a generation task."),
    out: Path = typer.Option(Path("task.yaml"), "--out", "-o", help="Task file to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing task file."),
) -> None:
    """Write a task file for a data file: picks the text and label columns, plans the splits, then validates it."""
    from adaptlab.data import load_task
    from adaptlab.data.scaffold import scaffold_file, scaffold_hf
    from adaptlab.data.validate import validate_task
    from adaptlab.files import write_text_atomic

    if out.exists() and not force:
        raise AdaptlabError("already exists, and is kept", file=out, field="--out",
                            hint="pass --force to replace it, or choose another --out")
    path = Path(data).expanduser()
    if path.exists() or not _hub_dataset_name(data):
        scaffold = scaffold_file(path, out, text=text, label=label, target=target)
    else:
        from adaptlab.models.loading import hub_reachable

        if not hub_reachable():
            raise AdaptlabError(f"no file '{data}', and the Hugging Face hub cannot be reached to load a dataset of "
                                "that name", field="DATA", hint="give a local CSV, TSV, JSONL or Parquet file")
        scaffold = scaffold_hf(data, text=text, label=label, target=target)
    write_text_atomic(out, scaffold.yaml)
    console.print(f"wrote [bold]{escape(str(out))}[/bold] ({scaffold.rows:,} rows read)")
    for line in scaffold.choices:
        console.print(f"  {escape(line)}")
    for line in scaffold.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)}")
    report = validate_task(load_task(out))
    show_validation(report, tables=False)
    if not report.ok:
        raise typer.Exit(1)
    console.print(f"next: edit the instruction and verbalizers in {escape(str(out))}, then "
                  f"[bold]adaptlab compare {escape(str(out))}[/bold]")


@app.command("validate", short_help="Check a task's data before spending compute on it.")
def validate_cmd(
    task_path: Path = typer.Argument(..., help="Task YAML file."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="Model whose tokenizer and context length to check against."
    ),
    no_model: bool = typer.Option(False, "--no-model", help="Skip the context-length check."),
) -> None:
    """Check a task's data: rows, labels, duplicates, leakage, empty and over-long inputs. Given an experiment file,
    check it too: its options, sizes and seeds, and count the cells it runs."""
    from adaptlab.data import load_task
    from adaptlab.data.validate import validate_task

    if is_experiment_file(task_path):
        task_path = validate_experiment(task_path)
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
    show_validation(report)
    raise typer.Exit(0 if report.ok else 1)


def is_experiment_file(path: Path) -> bool:
    """Whether ``path`` is an experiment YAML (a top-level ``strategies:`` key) rather than a task."""
    from adaptlab.config import read_yaml

    try:
        doc, _ = read_yaml(path)
    except AdaptlabError:
        return False  # the task loader reports the problem
    return isinstance(doc, dict) and "strategies" in doc


def validate_experiment(path: Path) -> Path:
    """Check an experiment file and print the cells it would run; returns its task file (checked next)."""
    from collections import Counter

    from adaptlab.experiment.config import load_experiment
    from adaptlab.experiment.runner import prepare

    cfg = load_experiment(path)
    inputs, cells = prepare(cfg)
    by_variant = Counter(c.variant for c in cells)
    console.print(f"experiment {path}: {len(cells)} cells, {len(by_variant)} variants, "
                  f"{len(inputs.test)} {cfg.split} examples each")
    for variant, n in by_variant.items():
        console.print(f"  {n:>3}  {escape(variant)}")
    task = cfg.resolve_task()
    if task.source is None:
        raise typer.Exit(0)  # a built-in task: nothing more to check
    return Path(task.source)


@app.command("models", short_help="The models known here, and whether they are installed.")
def models_cmd() -> None:
    """List the known model names, whether each is available here, size and parameter count."""
    from rich.text import Text

    from adaptlab.models.info import list_models
    from adaptlab.report.console import Column, fitted_table

    infos = list_models()
    columns = [Column("name", [i.name for i in infos], priority=99),
               Column("kind", [i.kind for i in infos], priority=3),
               Column("available", ["yes" if i.available else "no" for i in infos], priority=9),
               Column("size", [human_bytes(i.size_bytes) for i in infos], justify="right", priority=5),
               Column("parameters", [f"{i.params / 1e6:.1f}M" if i.params else "-" for i in infos],
                      justify="right", priority=6)]
    console.print(Text("Models", style="bold"))
    console.print(fitted_table(columns, console.width))
    for info in infos:
        if info.note:
            console.print(Text(f"{info.name}: {info.note}", style="dim"))
        if info.terms:
            console.print(Text(f"{info.name}: {info.terms}"))


def show_validation(report: object, *, tables: bool = True) -> None:
    """A validation report: tables and the summary on stdout, errors and warnings on stderr."""
    from adaptlab.cli.render import validation_report

    main, problems = validation_report(report)  # type: ignore[arg-type]
    for renderable in problems:
        err_console.print(renderable)
    for renderable in main if tables else main[-1:]:
        console.print(renderable)


def _hub_dataset_name(text: str) -> bool:
    """Whether ``text`` looks like a Hugging Face dataset id (``imdb``, ``org/name``) rather than a file."""
    import re

    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", text)) and not any(
        text.lower().endswith(ext) for ext in (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt", ".gz"))
