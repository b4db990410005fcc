"""``adaptlab prompt``, ``adaptlab finetune`` and ``adaptlab predict``: one strategy once, and applying its artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from adaptlab.cli.app import DEFAULT_MODEL, PICKLE_HELP, TRUST_HELP, app, console, model_spec, parse_options, print_result
from adaptlab.errors import AdaptlabError


def _run_one(task_path: Path, strategy: str, options: dict, spec: object, run: object) -> None:
    from adaptlab.data import load_task
    from adaptlab.experiment.single import run_single
    from adaptlab.strategies import DEFAULT_ROLE, ModelPool

    task = load_task(task_path)
    result = run_single(task, strategy, options, ModelPool({DEFAULT_ROLE: spec}), run)  # type: ignore[dict-item]
    if result is None:  # a non-main process of a multi-process run: it only trained
        return
    out = run.out_dir  # type: ignore[attr-defined]
    print_result(result.to_json(), title=f"{task.name}: {strategy}")
    console.print(f"artifact: [bold]{escape(str(out))}[/bold]  (adaptlab predict {escape(str(out))} --text ...)")


@app.command("prompt", short_help="Prompt a model (no weight changes) and measure it.")
def prompt_cmd(
    task_path: Path = typer.Argument(..., help="Task YAML file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for adapted.json and metrics.json."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name, HF id or folder."),
    strategy: str = typer.Option("few_shot", "--strategy", "-s", help="zero_shot | few_shot | calibrate | prompt_search"),
    shots: Optional[int] = typer.Option(None, "--shots", "-k", help="Demonstrations (few-shot)."),
    selection: Optional[str] = typer.Option(None, "--selection", help="random | balanced | knn"),
    calibrate: bool = typer.Option(False, "--calibrate", help="Contextual calibration of label probabilities."),
    prompt_format: Optional[str] = typer.Option(None, "--format", help="auto | plain | chat"),
    option: list[str] = typer.Option([], "--option", help="Any strategy option as key=value (repeatable)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate on."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate a seeded sample of N examples."),
    seed: int = typer.Option(0, "--seed", help="Seed for selection, dev carving and bootstrap."),
    force: bool = typer.Option(False, "--force", help="Replace a run already in --out (kept otherwise)."),
    backend: str = typer.Option("hf", "--backend", help="hf (local weights) | api (OpenAI-compatible) | vllm."),
    api_base: Optional[str] = typer.Option(None, "--api-base", "--base-url", help="API backend: http://HOST:PORT/v1"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Env var holding the API key."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
) -> None:
    """Adapt a model by prompting (no weight changes); write the prompt artifact and its metrics."""
    from adaptlab.experiment.single import SingleRun
    from adaptlab.strategies import get_strategy

    get_strategy(strategy)
    options = parse_options(option)
    for key, value in (("k", shots), ("selection", selection), ("format", prompt_format)):
        if value is not None:
            options[key] = value
    if calibrate:
        options["calibrate"] = True
    spec = model_spec(model, backend=backend, base_url=api_base, api_key_env=api_key_env, dtype=dtype, device=device,
                      trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    _run_one(task_path, strategy, options, spec, SingleRun(out_dir=out, split=split, limit=limit, seed=seed,
                                                            force=force))


@app.command("finetune", short_help="Fine-tune a model (weights change) and measure it.")
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
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its newest checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace a run already in --out (kept otherwise)."),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Keep checkpoints after success."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
) -> None:
    """Adapt a model by fine-tuning (weights change); write the adapter, its metrics and a model card."""
    from adaptlab.experiment.single import SingleRun
    from adaptlab.strategies import get_strategy

    options = parse_options(option, "--set")
    info = get_strategy(method, field="method")
    if "epochs" in info.experiment_defaults:
        options.setdefault("epochs", epochs)
    if merge:
        options["merge"] = True
    spec = model_spec(model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    _run_one(task_path, method, options, spec, SingleRun(out_dir=out, n_train=n_train, split=split, limit=limit,
                                                          seed=seed, resume=resume, force=force,
                                                          keep_checkpoints=keep_checkpoints))


@app.command("predict", short_help="Apply an adapted artifact to new inputs.")
def predict_cmd(
    artifact: Path = typer.Argument(..., help="Folder written by `adaptlab prompt`, `adaptlab finetune` or a compare run."),
    text: list[str] = typer.Option([], "--text", "-t", help="Input text (repeatable)."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="CSV, TSV, JSONL or Parquet file of rows "
                                                                          "(the columns the task's input uses)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write predictions as JSONL here."),
    backend: str = typer.Option("hf", "--backend", help="hf | api | vllm"),
    api_base: Optional[str] = typer.Option(None, "--api-base", "--base-url", help="API backend: http://HOST:PORT/v1"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | auto"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
    plugin: list[str] = typer.Option([], "--plugin", help="Import this plugin (module or .py file) first: an artifact "
                                                         "of a plugin's strategy needs it (repeatable)."),
) -> None:
    """Apply an adapted artifact to new inputs."""
    from adaptlab.experiment.plugins import load_plugins
    from adaptlab.lm.factory import build_lm
    from adaptlab.predict import predict_texts, read_input_rows

    load_plugins(plugin, Path.cwd())
    if not (artifact / "adapted.json").is_file():
        raise AdaptlabError("not an adaptlab artifact (no adapted.json)", file=artifact)
    if not text and input_file is None:
        raise AdaptlabError("give --text or --input", field="--text")
    rows = read_input_rows(input_file) if input_file is not None else []

    def binder(name: str):  # the LM of the model a prompt artifact names, served as the flags say
        return build_lm(model_spec(name, backend=backend, base_url=api_base, dtype=dtype, device=device,
                                   trust_remote_code=trust_remote_code, allow_pickle=allow_pickle))

    try:
        predictions = predict_texts(artifact, binder, text, rows=rows, progress=len(text) + len(rows) > 50)
    except AdaptlabError as exc:
        if exc.file is None and input_file is not None:
            exc.file = str(input_file)
        raise
    if output is not None:
        from adaptlab.files import write_text_atomic

        lines = [json.dumps({"id": p.id, "input": p.extra.get("input", ""), **{k: v for k, v in p.to_dict().items()
                                                                                if k != "id"}}, ensure_ascii=False)
                 for p in predictions]
        write_text_atomic(output, "".join(line + "\n" for line in lines))
        console.print(f"wrote {len(predictions)} predictions to {escape(str(output))}")
        return
    from rich.table import Table

    table = Table(show_lines=False, expand=False)
    table.add_column("id", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("input", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("prediction", style="bold", no_wrap=True)
    table.add_column("conf.", justify="right", no_wrap=True)
    for p in predictions:
        conf = f"{max(p.scores.values()):.2f}" if p.scores else "-"
        table.add_row(escape(p.id), escape(str(p.extra.get("input", ""))), escape(p.pred), conf)
    console.print(table)
