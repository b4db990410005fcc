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
TRUST_HELP = "Let a model folder run its own Python code (trusted sources only)."
EXIT_CELLS_FAILED = 3
"""`compare` / `demo` exit status when the run finished but some cells failed (1: a user error, 2: a
command-line usage error from click, 130/143: interrupted)."""
PICKLE_HELP = "Allow pickle (.bin) weights, which can run code when loaded (trusted sources only)."


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

    from adaptlab.model_info import list_models

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
        from adaptlab.model_info import context_length
        from adaptlab.models import load_tokenizer

        try:
            tokenizer = load_tokenizer(model)
            max_tokens = context_length(model)
        except AdaptlabError as exc:
            err_console.print("[yellow]warning:[/yellow] context check skipped: " + escape(exc.one_line()))
    report = validate_task(task, tokenizer=tokenizer, max_tokens=max_tokens)
    for renderable in render_report(report):
        console.print(renderable)
    raise typer.Exit(0 if report.ok else 1)


def _parse_options(pairs: list[str]) -> dict:
    """`--option key=value` pairs; values parsed as YAML scalars/lists (`k=8`, `content_free=[N/A, ""]`)."""
    import yaml

    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AdaptlabError(f"--option expects key=value, got '{pair}'", field="--option")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise AdaptlabError(f"--option {key.strip()}: value is not a YAML scalar or list "
                                f"({str(exc).splitlines()[0]})", field=key.strip()) from None
    return options


@app.command("prompt")
def prompt_cmd(
    task_path: Path = typer.Argument(..., help="Task YAML file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for adapted.json and metrics.json."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name, HF id or folder."),
    strategy: str = typer.Option("few_shot", "--strategy", "-s",
                                 help="zero_shot | few_shot | calibrate | prompt_search"),
    shots: Optional[int] = typer.Option(None, "--shots", "-k", help="Demonstrations (few-shot)."),
    selection: Optional[str] = typer.Option(None, "--selection", help="random | balanced | knn"),
    calibrate: bool = typer.Option(False, "--calibrate", help="Contextual calibration of label probabilities."),
    prompt_format: Optional[str] = typer.Option(None, "--format", help="plain | chat"),
    option: list[str] = typer.Option([], "--option", help="Any strategy option as key=value (repeatable)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate on."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a seeded sample of N examples."),
    seed: int = typer.Option(0, "--seed", help="Seed for selection, dev carving and bootstrap."),
    backend: str = typer.Option("hf", "--backend", help="hf (local weights) | api (OpenAI-compatible)."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="API backend: http://HOST:PORT/v1"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Env var holding the API key."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
) -> None:
    """Adapt a model by prompting (no weight changes); write the prompt artifact and its metrics."""
    from adaptlab.evaluate import run_prompt
    from adaptlab.lm.factory import build_lm
    from adaptlab.tasks import load_task

    task = load_task(task_path)
    options = _parse_options(option)
    if shots is not None:
        options["k"] = shots
    if selection is not None:
        options["selection"] = selection
    if calibrate:
        options["calibrate"] = True
    if prompt_format is not None:
        options["format"] = prompt_format
    def lm():  # built after the strategy, options, output folder and data are checked
        return build_lm(model, backend=backend, dtype=dtype, device=device, base_url=api_base,
                        api_key_env=api_key_env, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)

    result = run_prompt(task, lm, strategy, options, out_dir=out, split=split, limit=limit, seed=seed)
    _print_result(result.to_json(), title=f"{task.name}: {strategy}")
    console.print(f"artifact: [bold]{escape(str(out))}[/bold]  (adaptlab predict {escape(str(out))} --text ...)")


@app.command("predict")
def predict_cmd(
    artifact: Path = typer.Argument(..., help="Folder written by `adaptlab prompt` or `adaptlab finetune`."),
    text: list[str] = typer.Option([], "--text", "-t", help="Input text (repeatable)."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="JSONL file of example fields."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write predictions as JSONL here."),
    backend: str = typer.Option("hf", "--backend", help="hf | api"),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="API backend: http://HOST:PORT/v1"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
) -> None:
    """Apply an adapted artifact to new inputs."""
    from adaptlab.evaluate import predict_texts, read_input_rows
    from adaptlab.lm.factory import build_lm

    if not (artifact / "adapted.json").is_file():
        raise AdaptlabError("not an adaptlab artifact (no adapted.json)", file=artifact)
    if not text and input_file is None:
        raise AdaptlabError("give --text or --input", field="--text")
    rows = read_input_rows(input_file) if input_file is not None else []
    predictions = predict_texts(
        artifact, lambda name: build_lm(name, backend=backend, dtype=dtype, device=device, base_url=api_base,
                                        trust_remote_code=trust_remote_code, allow_pickle=allow_pickle),
        text, rows=rows, progress=len(text) + len(rows) > 50,
    )
    if output is not None:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text("".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in predictions))
        tmp.replace(output)
        console.print(f"wrote {len(predictions)} predictions to {escape(str(output))}")
        return
    from rich.table import Table

    table = Table(show_lines=False)
    table.add_column("id")
    table.add_column("prediction", style="bold")
    table.add_column("confidence", justify="right")
    for p in predictions:
        conf = f"{max(p.scores.values()):.2f}" if p.scores else "-"
        table.add_row(escape(p.id), escape(p.pred), conf)
    console.print(table)


@app.command("finetune")
def finetune_cmd(
    task_path: Path = typer.Argument(..., help="Task YAML file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the adapter, metrics.json and model card."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model name, HF id or folder."),
    method: str = typer.Option("lora", "--method", help="lora | full | prompt_tuning | ia3 | embedding_probe"),
    n_train: Optional[int] = typer.Option(256, "--n-train", help="Training examples (nested stratified subset)."),
    epochs: int = typer.Option(3, "--epochs", help="Passes over the training subset."),
    seed: int = typer.Option(0, "--seed", help="Seed for the subset, initialisation and data order."),
    option: list[str] = typer.Option([], "--option", "--set", help="Method/training option key=value (repeatable)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate on."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a seeded sample of N examples."),
    merge: bool = typer.Option(False, "--merge", help="Also write the adapter merged into the base weights."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep checkpoints after success."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
) -> None:
    """Adapt a model by fine-tuning (weights change); write the adapter, its metrics and a model card."""
    from adaptlab.finetuning.run import run_finetune

    result = run_finetune(task_path, model, method, n_train=n_train, epochs=epochs, out_dir=out, seed=seed,
                          options=_parse_options(option), split=split, limit=limit, merge=merge,
                          resume=resume, keep_checkpoints=keep_checkpoints,
                          trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if result is None:  # a non-main process of a multi-process run: it only trained
        return
    _print_result(result.to_json(), title=f"{out.name}: {method}")
    console.print(f"artifact: [bold]{escape(str(out))}[/bold]  (adaptlab predict {escape(str(out))} --text ...)")


@app.command("compare")
def compare_cmd(
    experiment: Path = typer.Argument(..., help="Experiment YAML file (task, strategies, sizes, seeds, scenario)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: adaptlab.db and cells/ (one per grid cell)."),
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
) -> None:
    """Run an experiment grid (prompting and fine-tuning cells) and compare them on the same test examples.

    Exit status 3 when the run finished but some cells failed (all else is saved; --resume retries them).
    """
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.executors import executor_config

    cfg = load_experiment(experiment)
    if limit is not None:
        cfg = cfg.model_copy(update={"limit": limit})
    if executor is not None or workers is not None or ray_address is not None:
        cfg = cfg.model_copy(update={"executor": executor_config(cfg.executor, kind=executor, workers=workers,
                                                                 address=ray_address)})
    _run_compare(cfg, out, resume=resume, mlflow=mlflow, progress=not no_progress)


@app.command("demo")
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
        cfg = cfg.model_copy(update=updates)
    task = cfg.resolve_task()
    console.print(f"[bold]Demo[/bold] {escape(task.name)} ({len(task.label_keys)} intents) on {escape(cfg.model)}: "
                  f"{', '.join(dict.fromkeys(s.name for s in cfg.strategies))} -> {escape(str(out))}")
    _run_compare(cfg, out, resume=True, mlflow=False, progress=not no_progress, rerun="adaptlab demo")


def _run_compare(cfg, out: Path, *, resume: bool, mlflow: bool, progress: bool, rerun: Optional[str] = None) -> None:
    """Run ``cfg`` into ``out`` and print the results table and the headline (exit 130/143 if interrupted).
    ``rerun``: the command that resumes (when not ``--resume``)."""
    from adaptlab.experiment.runner import RunInterrupted, run_experiment

    try:
        records = run_experiment(cfg, out, resume=resume, progress=progress, mlflow=mlflow)
    except RunInterrupted as exc:
        text = exc.one_line() if rerun is None else f"interrupted: {exc.saved} cells saved; run `{rerun}` to resume"
        err_console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    from adaptlab.report.console import compare_output
    from adaptlab.store import RunStore

    store = RunStore(out, create=False)
    try:
        table, failed, lines = compare_output(records, cfg.scenario, store.predictions,
                                              title=f"{cfg.name}: {cfg.resolve_task().name} on {cfg.model}")
        console.print(table)
        for line in failed:
            err_console.print(line, highlight=False)
        for line in lines:
            console.print(line)
    finally:
        store.close()
    from adaptlab.report import build_report

    paths = build_report(out, cfg.scenario)
    rec = json.loads(paths.results_json.read_text(encoding="utf-8")).get("recommendation") or {}
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


@app.command("recommend")
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
        from adaptlab.store import RunStore

        store = RunStore(run_dir, create=False)
        try:
            scenario = scenario_with((store.experiment() or {}).get("scenario"), overrides)
            rec = recommend(analyze(store.cells(), store.predictions, scenario), scenario)
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(rec.to_dict(), indent=2))
        return
    colour = {"prompt": "cyan", "finetune": "green", "collect_labels": "yellow", "too_close": "magenta"}
    console.print(f"[bold {colour[rec.decision]}]{rec.decision}[/]  [dim]({rec.basis})[/dim]  "
                  f"[bold]{escape(rec.headline)}[/bold]")
    for title, lines in (("Why", rec.reasons), ("What would change it", rec.would_change)):
        if lines:
            console.print(f"\n[bold]{title}[/bold]")
            for line in lines:
                console.print(f"  - {escape(line)}")


@app.command("report")
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
    from adaptlab.report import build_report
    from adaptlab.store import RunStore

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


def _print_result(metrics: dict, *, title: str) -> None:
    """One strategy's headline numbers from its metrics.json dict."""
    from rich.table import Table

    m = metrics["metric"]
    q = metrics["cost"]["query"]
    t = metrics["cost"]["train"]
    table = Table(title=escape(title))
    for col in ("metric", "value", "95% CI", "n", "prompt tok/query", "latency p50", "fit seconds"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    table.add_row(
        m["name"], f"{m['value']:.3f}", f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]", str(metrics["n"]),
        f"{q.get('prompt_tokens', 0):.0f}", f"{(q.get('latency_p50_s') or 0) * 1000:.0f} ms",
        f"{t.get('seconds', 0):.1f}",
    )
    console.print(table)


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
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # adaptlab shows its own progress
    import warnings

    if not debug:  # the libraries' deprecation notices are for their developers, not for CLI users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        app()
    except AdaptlabError as exc:
        if debug:
            raise
        err_console.print("[red]error:[/red] " + escape(exc.one_line()), highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as exc:  # the environment (disk full, permissions, ...): one line, like user errors
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err_console.print("[red]error:[/red] " + escape(f"{where}{exc.strerror or exc}"), highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line; --debug shows the traceback
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err_console.print("[red]internal error:[/red] " + escape(f"{type(exc).__name__}: {first}")
                          + " (a bug in adaptlab; rerun with --debug for the traceback)", highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
