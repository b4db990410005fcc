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


def _parse_options(pairs: list[str]) -> dict:
    """`--option key=value` pairs; values parsed as YAML scalars/lists (`k=8`, `content_free=[N/A, ""]`)."""
    import yaml

    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AdaptlabError(f"--option expects key=value, got '{pair}'", field="--option")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
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
    lm = build_lm(model, backend=backend, dtype=dtype, device=device, base_url=api_base,
                  api_key_env=api_key_env)
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
        artifact, lambda name: build_lm(name, backend=backend, dtype=dtype, device=device, base_url=api_base),
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
) -> None:
    """Adapt a model by fine-tuning (weights change); write the adapter, its metrics and a model card."""
    from adaptlab.finetuning.run import run_finetune

    result = run_finetune(task_path, model, method, n_train=n_train, epochs=epochs, out_dir=out, seed=seed,
                          options=_parse_options(option), split=split, limit=limit, merge=merge,
                          resume=resume, keep_checkpoints=keep_checkpoints)
    if result is None:  # a non-main process of a multi-process run: it only trained
        return
    _print_result(result.to_json(), title=f"{out.name}: {method}")
    console.print(f"artifact: [bold]{escape(str(out))}[/bold]  (adaptlab predict {escape(str(out))} --text ...)")


DEMO_STRATEGIES: list[tuple[str, str, dict]] = [
    ("zero-shot", "zero_shot", {}),
    ("zero-shot + calibration", "zero_shot", {"calibrate": True}),
    ("8-shot balanced", "few_shot", {"k": 8, "selection": "balanced"}),
    ("8-shot balanced + calibration", "few_shot", {"k": 8, "selection": "balanced", "calibrate": True}),
]


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (relative to where you run it)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name, HF id or folder."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a seeded sample of N test examples."),
) -> None:
    """Run the built-in demo: the customer-support intent task on the default model."""
    from rich.table import Table

    from adaptlab.evaluate import run_prompt
    from adaptlab.lm.factory import build_lm
    from adaptlab.tasks import builtin_task
    from adaptlab.validate import validate_task

    task = builtin_task("demo")
    report = validate_task(task)
    rows = ", ".join(f"{name} {split.rows}" for name, split in report.splits.items())
    console.print(f"[bold]Task[/bold] {task.name}: {len(task.label_keys)} intents ({rows}); "
                  f"validation {'OK' if report.ok else 'FAILED'} with {len(report.warnings)} warning(s)")
    if not report.ok:
        for line in report.errors:
            err_console.print(escape(line))
        raise typer.Exit(1)
    lm = build_lm(model)
    table = Table(title=f"{task.name} on {model} (test split)")
    for col in ("strategy", "accuracy", "95% CI", "prompt tok/query", "latency p50", "fit s"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    results = {}
    for label, strategy, options in DEMO_STRATEGIES:
        slug = label.replace(" + ", "-").replace(" ", "-")
        result = run_prompt(task, lm, strategy, options, out_dir=out / slug, limit=limit).to_json()
        results[label] = (out / slug, result)
        m, q = result["metric"], result["cost"]["query"]
        table.add_row(label, f"{m['value']:.3f}", f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]",
                      f"{q.get('prompt_tokens', 0):.0f}", f"{(q.get('latency_p50_s') or 0) * 1000:.0f} ms",
                      f"{result['cost']['train'].get('seconds', 0):.1f}")
    console.print(table)
    best_label, (best_dir, best) = max(results.items(), key=lambda kv: kv[1][1]["metric"]["value"])
    from adaptlab.evaluate import predict_texts

    sample = "Hi, I was charged twice for my subscription this month, can you look into it?"
    pred = predict_texts(best_dir, lambda _name: lm, [sample])[0]
    console.print(f"Best: [bold]{best_label}[/bold] ({best['metric']['value']:.3f}); artifact in {escape(str(best_dir))}")
    console.print(f"Example: {escape(sample)!r} -> [bold]{escape(pred.pred)}[/bold]")


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
