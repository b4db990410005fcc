"""What a run folder holds beside its artifact: ``config.json`` (how to reproduce it) and ``README.md`` (a model
card: base model, strategy, data, options, metrics, cost and the FLOPs formula)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptlab.evaluate import EvalResult
from adaptlab.files import write_json_atomic, write_text_atomic

_FAMILY_TEXT = {
    "prompt": "Prompting: the model's weights are unchanged; the artifact is the prompt (instruction, format, "
              "demonstrations, calibration) in `adapted.json`.",
    "finetune": "Fine-tuning: the artifact holds trained weights (an adapter, a whole model, or a classifier over "
                "embeddings) and the prompt format it was trained on.",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


def _table(rows: dict[str, Any]) -> str:
    lines = ["", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows.items()]
    return "\n".join(lines)


def model_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Markdown: base model, strategy, data, options, metrics, cost and the FLOPs formula."""
    cost = metrics.get("cost") or {}
    train_cost = cost.get("train") or {}
    query = cost.get("query") or {}
    metric = metrics.get("metric") or {}
    options = config.get("config") or {}
    formula = train_cost.get("flops_formula") or "2 x N x (tokens the fit ran through the model)"
    parts = [
        f"# {config['task']} - {config['strategy']} on {config['model']}",
        "",
        f"Adapted with adaptlab {config.get('adaptlab_version', '')}. "
        "Load it with `adaptlab.strategies.load_adapted(DIR)` or `adaptlab predict DIR`.",
        "",
        _FAMILY_TEXT.get(config.get("family", ""), ""),
        "",
        "## Model",
        _table({"base model": config["model"], "strategy": config["strategy"], "family": config.get("family"),
                "trainable parameters": train_cost.get("trainable_params")}),
        "",
        "## Data",
        _table({"task": config["task"], "task file": config.get("task_file"), "training examples": config.get("n_train"),
                "dev examples": config.get("n_dev"), "evaluation split": config.get("split"),
                "evaluated examples": metrics.get("n"), "seed": config.get("seed")}),
        "",
        "## Options",
        _table({k: v for k, v in options.items() if k not in ("train", "prompt")}),
    ]
    if isinstance(options.get("train"), dict):
        parts += ["", "## Training", _table(options["train"])]
    parts += [
        "",
        "## Metrics",
        _table({metric.get("name", "metric"): metric.get("value"),
                f"{int(100 * metric.get('confidence', 0.95))}% CI": (
                    f"[{_fmt(metric.get('ci_low'))}, {_fmt(metric.get('ci_high'))}]" if metric else None)}),
        "",
        "## Cost",
        _table({"fit seconds (wall)": train_cost.get("seconds"),
                "training tokens": train_cost.get("tokens"),
                "tokens / second": train_cost.get("tokens_per_second"),
                "fit FLOPs (estimate)": train_cost.get("flops"),
                "peak memory (bytes)": train_cost.get("peak_memory_bytes"),
                "artifact bytes": train_cost.get("artifact_bytes"),
                "prompt tokens / query": query.get("prompt_tokens"),
                "FLOPs / query": query.get("flops"),
                "latency / query (s, batched)": query.get("latency_s"),
                "latency p50 (s, single query)": query.get("latency_p50_s")}),
        "",
        "FLOPs formula: " + formula + ". Per query: 2 x N x (prompt + scored tokens).",
        "",
    ]
    return "\n".join(parts)


def write_run_files(folder: Path, config: dict[str, Any], result: EvalResult) -> None:
    """``config.json`` (the resolved configuration of the fit) and ``README.md`` beside the artifact in ``folder``."""
    write_json_atomic(folder / "config.json", config)
    write_text_atomic(folder / "README.md", model_card(config, result.to_json()))
