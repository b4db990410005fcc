"""The model card (``README.md``) written beside a fine-tuned artifact."""

from __future__ import annotations

from typing import Any

from adaptlab.finetuning.recipe import FLOPS_FORMULA


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _table(rows: dict[str, Any]) -> str:
    lines = ["", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def model_card(config: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """Markdown: base model, method, data, hyperparameters, metrics, cost and the FLOPs formula."""
    method = config["method"]
    cost = ((metrics or {}).get("cost") or {})
    train_cost = cost.get("train") or {}
    query = cost.get("query") or {}
    metric = (metrics or {}).get("metric") or {}
    weights = {"embedding_probe": "`probe.safetensors` (logistic-regression coefficients) + `adapted.json`",
               "full": "`model/` (all weights, safetensors)"}.get(
        method, "`adapter/` (peft adapter, safetensors)" + (" and `merged/` (merged model)"
                                                           if config.get("merge") else ""))
    formula = ("2 x N_embedder x embedded tokens (the logistic regression is negligible)"
               if method == "embedding_probe" else FLOPS_FORMULA)
    parts = [
        f"# {config['task']} - {method} on {config['model']}",
        "",
        f"Fine-tuned with adaptlab {config.get('adaptlab_version', '')}.",
        "Load it with `adaptlab.adapted.load_adapted(DIR)` or `adaptlab predict DIR`.",
        "",
        "## Model",
        _table({"base model": config["model"], "method": method, "weights": weights,
                "trainable parameters": train_cost.get("trainable_params")}),
        "",
        "## Data",
        _table({"task": config["task"], "task file": config.get("task_file"), "training examples": config.get("n_train"),
                "dev examples": config.get("n_dev"), "evaluation split": config.get("split"),
                "evaluated examples": (metrics or {}).get("n"), "seed": config.get("seed")}),
        "",
        "Training format: the zero-shot prompt of `adaptlab prompt` (instruction + input -> verbalizer),"
        " loss on the answer tokens only." if method != "embedding_probe" else
        "Features: sentence embeddings of the rendered input; classifier: L2 logistic regression.",
        "",
        "## Hyperparameters",
        _table({**{k: v for k, v in config.get("method_config", {}).items() if k != "method"},
                **config.get("train_args", {})}),
        "",
        "## Metrics",
        _table({metric.get("name", "metric"): metric.get("value"),
                f"{int(100 * metric.get('confidence', 0.95))}% CI": (
                    f"[{_fmt(metric.get('ci_low'))}, {_fmt(metric.get('ci_high'))}]" if metric else None)}),
        "",
        "## Cost",
        _table({"training seconds (wall)": train_cost.get("seconds"),
                "training tokens": train_cost.get("tokens"),
                "tokens / second": train_cost.get("tokens_per_second"),
                "training FLOPs (estimate)": train_cost.get("flops"),
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
