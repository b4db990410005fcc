"""``adaptlab compare``, ``demo``, ``recommend`` and ``report``: the main job and its decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from adaptlab.cli.app import DEFAULT_MODEL, EXIT_CELLS_FAILED, app, console, err_console
from adaptlab.errors import AdaptlabError


@app.command("compare", short_help="Compare every way to adapt on the same data; recommend one.")
def compare_cmd(
    experiment: Path = typer.Argument(..., help="Experiment YAML (task, strategies, sizes, seeds, scenario), or a "
                                                "task YAML: a preset experiment sized to its data is run."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder: adaptlab.db and cells/ (one per grid "
                                                                 "cell); default runs/NAME."),
    preset: Optional[str] = typer.Option(None, "--preset", help="For a task file: quick | standard | thorough "
                                                                "(default: quick without a GPU, standard with one)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out: finished cells are skipped."),
    mlflow: bool = typer.Option(False, "--mlflow", help="Also log every cell to MLflow (RUN_DIR/mlruns)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1,
                                        help="Evaluate every cell on a seeded sample of N test examples."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress display."),
    executor: Optional[str] = typer.Option(None, "--executor",
                                           help="Run cells here one by one (local) or as Ray tasks in parallel "
                                                "(ray); default: the experiment's executor, else local."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="--executor ray: cells run at once."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="--executor ray: join this Ray cluster (default: start a "
                                                   "local one); artifacts need RUN_DIR on a shared file system."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Adapt this model instead of the experiment's."),
    backend: Optional[str] = typer.Option(None, "--backend", help="hf | api | vllm (instead of the experiment's)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", "--api-base", help="api backend: http://HOST:PORT/v1"),
) -> None:
    """Run an experiment grid (prompting and fine-tuning cells) and compare them on the same test examples.

    Exit status 3 when the run finished but some cells failed (all else is saved; --resume retries them).
    """
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.executors import executor_config

    if _is_task_file(experiment):
        experiment, out = _preset_experiment(experiment, out, preset, resume)
    elif preset is not None:
        raise AdaptlabError("--preset applies to a task file; this is an experiment", file=experiment, field="--preset",
                            hint="edit the experiment's strategies, or pass the task file")
    cfg = load_experiment(experiment)
    out = out or Path("runs") / cfg.name
    changes = {k: v for k, v in (("limit", limit), ("model", model), ("backend", backend), ("base_url", base_url))
               if v is not None}
    if executor is not None or workers is not None or ray_address is not None:
        changes["executor"] = executor_config(cfg.executor, kind=executor, workers=workers, address=ray_address)
    if changes:
        cfg = cfg.with_changes(**changes)
    run_compare(cfg, out, resume=resume, mlflow=mlflow, progress=not no_progress)


@app.command("demo", short_help="The built-in demo: prompt vs fine-tune on support tickets.")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (relative to where you run it)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name, HF id or folder."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate on a seeded sample of N test examples."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress display."),
) -> None:
    """Run the built-in demo: prompt vs fine-tune on the customer-support intent task (resumes if interrupted)."""
    from adaptlab.experiment import builtin_experiment

    cfg = builtin_experiment("demo")
    updates = {k: v for k, v in (("model", model if model != cfg.model else None), ("limit", limit)) if v is not None}
    if updates:
        cfg = cfg.with_changes(**updates)
    task = cfg.resolve_task()
    console.print(f"[bold]Demo[/bold] {escape(task.name)} ({len(task.label_keys)} intents) on {escape(cfg.model)}: "
                  f"{', '.join(dict.fromkeys(s.name for s in cfg.strategies))} -> {escape(str(out))}")
    run_compare(cfg, out, resume=True, mlflow=False, progress=not no_progress, rerun="adaptlab demo")


def run_compare(cfg, out: Path, *, resume: bool, mlflow: bool, progress: bool, rerun: Optional[str] = None) -> None:
    """Run ``cfg`` into ``out`` and print the results table and the headline (exit 130/143 if interrupted).
    ``rerun``: the command that resumes (when not ``--resume``)."""
    from adaptlab.experiment.runner import RunInterrupted, run_experiment

    try:
        records = run_experiment(cfg, out, resume=resume, progress=progress, mlflow=mlflow)
    except RunInterrupted as exc:
        text = exc.one_line() if rerun is None else f"interrupted: {exc.saved} cells saved; run `{rerun}` to resume"
        err_console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    from adaptlab.experiment.store import RunStore
    from adaptlab.report.console import compare_output

    store = RunStore(out, create=False)
    try:
        shown, failed, lines = compare_output(records, cfg.scenario, store.predictions,
                                              title=f"{cfg.name}: {cfg.resolve_task().name} on {cfg.model}",
                                              width=console.width)
        for renderable in shown:
            console.print(renderable)
        for line in failed:
            err_console.print(line, highlight=False)
        for line in lines:
            console.print(line)
    finally:
        store.close()
    from adaptlab.report import build_report

    paths = build_report(out, cfg.scenario)
    rec = json.loads(paths.results_json.read_text(encoding="utf-8")).get("recommendation") or {}
    if rec.get("break_even"):
        console.print(escape(rec["break_even"]))
    if rec.get("headline"):
        console.print(f"[bold]Recommendation[/bold] ({escape(str(rec.get('basis', 'measured')))}): "
                      f"{escape(rec['headline'])}")
    console.print(f"report: [bold]{escape(str(paths.html))}[/bold]  summary: {escape(str(paths.summary_md))}"
                  + (f"  artifact to ship: {escape(str(paths.best_dir))}" if paths.best_dir else ""))
    console.print(f"run folder: [bold]{escape(str(out))}[/bold] (adaptlab.db, cells/)")
    failed = sum(1 for r in records if r.status == "failed")
    if failed:  # everything is written; a script must still see that the grid is incomplete
        resume = rerun or "adaptlab compare ... --resume"
        err_console.print(f"[red]{failed} of {len(records)} cells failed[/red] (reasons above); fix the cause and "
                          f"run `{escape(resume)}` to retry only those", highlight=False)
        raise typer.Exit(EXIT_CELLS_FAILED)


@app.command("recommend", short_help="Re-decide for another scenario (nothing is re-run).")
def recommend_cmd(
    run_dir: Optional[Path] = typer.Argument(None, help="Run folder of `adaptlab compare` (omit: estimate "
                                             "from published findings)."),
    queries_per_month: Optional[float] = typer.Option(None, "--queries-per-month", help="Expected queries a month."),
    accuracy_target: Optional[float] = typer.Option(None, "--accuracy-target", help="Metric value you need (e.g. 0.85)."),
    labels: Optional[int] = typer.Option(None, "--labels", help="Labelled examples on hand."),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="$ per hour of the hardware."),
    latency_budget: Optional[float] = typer.Option(None, "--latency-budget", help="Max single-query latency, seconds."),
    task_changes: Optional[float] = typer.Option(None, "--task-changes-per-year", help="Task changes a year "
                                                 "(each re-trains)."),
    months: Optional[float] = typer.Option(None, "--months", help="Cost horizon in months."),
    prefix_cache: Optional[bool] = typer.Option(None, "--prefix-cache/--no-prefix-cache", help="The serving "
                                                "engine keeps prompt prefixes (price warm queries)."),
    task_type: str = typer.Option("classification", "--task-type", help="No run: classification | generation."),
    classes: int = typer.Option(2, "--classes", help="No run: number of classes."),
    as_json: bool = typer.Option(False, "--json", help="Print the recommendation as JSON."),
) -> None:
    """Re-decide prompt vs fine-tune for a scenario from a run's stored results (nothing is re-run)."""
    from adaptlab.recommend import prior_recommendation, recommend, scenario_with

    overrides = {"queries_per_month": queries_per_month, "accuracy_target": accuracy_target,
                 "labels_available": labels, "price_per_hour": price_per_hour,
                 "latency_budget_s": latency_budget, "task_changes_per_year": task_changes, "months": months,
                 "prefix_cache": prefix_cache}
    if run_dir is None:
        rec = prior_recommendation(scenario_with(None, overrides), task_type=task_type, n_classes=classes)
    else:
        from adaptlab.analysis import analyze
        from adaptlab.experiment.store import RunStore

        store = RunStore(run_dir, create=False)
        try:
            scenario = scenario_with((store.experiment() or {}).get("scenario"), overrides)
            rec = recommend(analyze(store.cells(), store.predictions, scenario), scenario)
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(rec.to_dict(), indent=2))
        return
    from rich.table import Table

    from adaptlab.recommend.text import DECISION_WORDS

    colour = {"prompt": "cyan", "finetune": "green", "collect_labels": "yellow", "too_close": "magenta"}
    console.print(f"[bold {colour[rec.decision]}]{DECISION_WORDS[rec.decision].upper()}[/]  [dim]({rec.basis})[/dim]  "
                  f"[bold]{escape(rec.headline)}[/bold]")
    for title, lines in (("Why", rec.reasons), ("What would change it", rec.would_change)):
        if lines:
            console.print(f"\n[bold]{title}[/bold]")
            bullets = Table.grid(padding=(0, 1))  # wrapped lines keep their indent
            bullets.add_column(no_wrap=True)
            bullets.add_column()
            for line in lines:
                bullets.add_row("  -", escape(line))
            console.print(bullets)


@app.command("report", short_help="Rebuild a run's report, summary and best artifact.")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder of `adaptlab compare`."),
    queries_per_month: Optional[float] = typer.Option(None, "--queries-per-month", help="Expected queries a month."),
    accuracy_target: Optional[float] = typer.Option(None, "--accuracy-target", help="Metric value you need."),
    labels: Optional[int] = typer.Option(None, "--labels", help="Labelled examples on hand."),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="$ per hour of the hardware."),
    latency_budget: Optional[float] = typer.Option(None, "--latency-budget", help="Max single-query latency, s."),
    task_changes: Optional[float] = typer.Option(None, "--task-changes-per-year", help="Task changes a year."),
    months: Optional[float] = typer.Option(None, "--months", help="Cost horizon in months."),
    prefix_cache: Optional[bool] = typer.Option(None, "--prefix-cache/--no-prefix-cache", help="The serving "
                                                "engine keeps prompt prefixes (price warm queries)."),
) -> None:
    """Rebuild a run's report.html, summary.md, results.json and best/ from its stored results."""
    from adaptlab.recommend import scenario_with
    from adaptlab.experiment.store import RunStore
    from adaptlab.report import build_report

    overrides = {"queries_per_month": queries_per_month, "accuracy_target": accuracy_target,
                 "labels_available": labels, "price_per_hour": price_per_hour,
                 "latency_budget_s": latency_budget, "task_changes_per_year": task_changes, "months": months,
                 "prefix_cache": prefix_cache}
    scenario = None
    if any(v is not None for v in overrides.values()):
        store = RunStore(run_dir, create=False)
        try:
            scenario = scenario_with((store.experiment() or {}).get("scenario"), overrides)
        finally:
            store.close()
    paths = build_report(run_dir, scenario)
    rec = json.loads(paths.results_json.read_text(encoding="utf-8")).get("recommendation")
    if rec:
        console.print(f"[bold]{escape(rec['decision'])}[/bold]: {escape(rec['headline'])}")
    console.print(f"report: [bold]{escape(str(paths.html))}[/bold]\nsummary: {escape(str(paths.summary_md))}"
                  f"\nresults: {escape(str(paths.results_json))}")
    if paths.best_dir is not None:
        console.print(f"best artifact: {escape(str(paths.best_dir))}  "
                      f"(adaptlab predict {escape(str(paths.best_dir))} --text ...)")


def _is_task_file(path: Path) -> bool:
    """Whether ``path`` holds a task (type, data, input ...) rather than an experiment (strategies ...)."""
    from adaptlab.config import read_yaml

    data, _ = read_yaml(path)
    return isinstance(data, dict) and "strategies" not in data and {"type", "data"} <= set(data)


def _preset_experiment(task_file: Path, out: Optional[Path], preset: Optional[str], resume: bool) -> tuple[Path, Path]:
    """The preset experiment for a task file, written as RUN/experiment.yaml (kept as it is on --resume)."""
    from adaptlab.data import load_splits, load_task
    from adaptlab.experiment.presets import check_preset, default_preset, preset_yaml
    from adaptlab.files import write_text_atomic

    task = load_task(task_file)
    name = check_preset(preset) if preset is not None else default_preset()
    out = out or Path("runs") / task.name
    path = out / "experiment.yaml"
    if resume and path.is_file():
        console.print(f"resuming with {escape(str(path))}")
        return path, out
    if path.is_file() and not resume:
        raise AdaptlabError("already holds a compare run", file=out, field="--out",
                            hint="pass --resume to continue it, or choose another --out")
    n_train = len(load_splits(task).train)
    write_text_atomic(path, preset_yaml(task, task_file, n_train, name))
    why = "" if preset is not None else " (the default " + ("with a GPU" if name == "standard" else "without a GPU") + ")"
    console.print(f"preset [bold]{name}[/bold]{why} for {escape(task.name)}: written to {escape(str(path))} "
                  "(edit it and rerun it as an experiment)")
    return path, out