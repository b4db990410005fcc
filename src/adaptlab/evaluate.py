"""The evaluator: scores any `Adapted` on a split and writes ``metrics.json`` in one schema. It never asks how
the model was adapted: it calls ``predict`` and reads the artifact's ``lm`` (usage counters, parameters, prefix
keeping) and ``cost()``.

Schema ``adaptlab.metrics/1`` (every strategy, prompting or fine-tuning)::

    {"schema", "task", "model", "strategy", "config", "split", "n",
     "metric": {"name", "value", "ci_low", "ci_high", "confidence"},
     "report": {...classification_report, or generation summary...},
     "cost": {"train": {"seconds", "flops", "peak_memory_bytes", "trainable_params", "artifact_bytes"},
              "query": {"prompt_tokens", "flops", "flops_amortized", "latency_s", "latency_p50_s",
                        "latency_p50_warm_s", "prefix_shared", ...}},
     "predictions": [{"id", "input", "gold", "pred", "correct" | "score", ...}],
     "usage": {...LM usage delta of the main predict...}, "adaptlab_version", ["search"]}

Per-query cost: ``prompt_tokens`` is the mean context tokens per query (with per-query calibration,
its content-free prompts included); ``flops`` = 2·N·(prompt + scored/generated tokens) per query when
served alone, ``flops_amortized`` the same from the tokens the backend actually computed in the
batched run (prefix cache reuse included); ``latency_s`` = seconds of the whole batched predict / n;
``latency_p50_s`` = median of a few single-query predict calls (real serving latency, no batching);
``latency_p50_warm_s`` the same with the backend keeping the previous query's prompt prefix, as a serving
engine with a prefix cache does (None when the backend cannot keep one).
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import adaptlab
from adaptlab.data.example import RAW_INPUT_FIELD
from adaptlab.data.splits import check_examples
from adaptlab.errors import DataError
from adaptlab.files import write_json_atomic
from adaptlab.metrics import bootstrap_ci, classification_report, per_example
from adaptlab.models.costs import forward_flops

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.strategies.artifacts import Adapted

log = logging.getLogger(__name__)

SCHEMA = "adaptlab.metrics/1"
METRICS_FILE = "metrics.json"
TRAIN_COST_KEYS = ("seconds", "flops", "peak_memory_bytes", "trainable_params", "artifact_bytes")


@dataclass
class EvalResult:
    """One evaluation; `to_json` gives the ``metrics.json`` document."""

    task: str
    model: str
    strategy: str
    config: dict[str, Any]
    split: str
    n: int
    metric: dict[str, Any]
    report: dict[str, Any]
    cost: dict[str, Any]
    predictions: list[dict[str, Any]]
    usage: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] | None = None

    @property
    def value(self) -> float:
        return float(self.metric["value"])

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA, "task": self.task, "model": self.model, "strategy": self.strategy,
            "config": self.config, "split": self.split, "n": self.n, "metric": self.metric,
            "report": self.report, "cost": self.cost, "predictions": self.predictions,
            "usage": self.usage, "adaptlab_version": adaptlab.__version__,
        }
        if self.search is not None:
            doc["search"] = self.search
        return doc


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation measures: interval, resamples, latency sample."""

    confidence: float = 0.95
    n_resamples: int = 1000
    latency_sample: int = 10
    """Single-query predictions timed for the median latency (0: none)."""


def evaluate(adapted: Adapted, task: Task, examples: Sequence[Example], *, seed: int = 0, split: str = "test",
             progress: bool = False, settings: EvalSettings = EvalSettings()) -> EvalResult:
    """Predict ``examples`` with ``adapted`` and measure quality and cost."""
    if not examples:
        raise DataError(f"no {split} examples to evaluate", file=task.source, field=split)
    check_examples(task, examples, split, unique_ids=True)  # before spending compute on predictions
    lm = adapted.lm
    before = asdict(lm.usage)
    t0 = time.perf_counter()
    preds = adapted.predict(examples, progress=progress)
    seconds = time.perf_counter() - t0
    usage = _usage_delta(before, asdict(lm.usage))
    if [p.id for p in preds] != [ex.id for ex in examples]:
        raise RuntimeError(f"{type(adapted).__name__}.predict returned predictions out of order")

    classification = task.type == "classification"
    refs = [task.label_of(ex) if classification else task.target_of(ex) for ex in examples]
    hyps = [p.pred for p in preds]
    labels = task.label_keys if classification else None
    ci = bootstrap_ci(task.metric, hyps, refs, n_resamples=settings.n_resamples, confidence=settings.confidence,
                      seed=seed, labels=labels)
    scores = per_example(task.metric, hyps, refs)
    report = (classification_report(refs, hyps, task.label_keys) if classification
              else _generation_report(hyps, scores))

    n = len(examples)
    n_params = lm.n_params
    own = adapted.cost() or {}
    prompt_tokens = float(np.mean([p.prompt_tokens for p in preds]))
    processed = float(np.mean([p.prompt_tokens + p.scored_tokens for p in preds]))
    train = {k: None for k in TRAIN_COST_KEYS}
    train.update(own.get("train", {}))
    query = {k: v for k, v in own.get("query", {}).items() if k != "prompt_tokens"}
    query.update({
        "prompt_tokens": prompt_tokens,
        "flops": forward_flops(n_params, processed) if n_params else None,
        "flops_amortized": (forward_flops(n_params, usage["computed_tokens"] / n)
                            if n_params and usage.get("computed_tokens") else None),
        "computed_tokens": usage.get("computed_tokens", 0) / n,
        "latency_s": seconds / n,
        "latency_p50_s": _latency_p50(adapted, examples, settings.latency_sample, seed),
        "latency_p50_warm_s": _latency_p50(adapted, examples, settings.latency_sample, seed, warm=True),
        "prefix_shared": own.get("query", {}).get("prefix_shared"),
    })
    rows = []
    for ex, p, ref, s in zip(examples, preds, refs, scores):
        row: dict[str, Any] = {"id": ex.id, "input": _input_text(task, ex), "gold": ref, "pred": p.pred}
        if classification:
            row["correct"] = bool(s >= 1.0)
            row["scores"] = p.scores
            row["logprobs"] = p.logprobs
        else:
            row["score"] = float(s)
            row["raw"] = p.raw
        rows.append(row)
    return EvalResult(
        task=task.name, model=adapted.model_name, strategy=adapted.strategy, config=dict(adapted.config or {}),
        split=split, n=n,
        metric={"name": task.metric, "value": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                "confidence": settings.confidence},
        report=report, cost={"train": train, "query": query}, predictions=rows, usage=usage,
        search=own.get("search"))


def _input_text(task: "Task", ex: "Example") -> str:
    if RAW_INPUT_FIELD in ex.fields:
        return str(ex.fields[RAW_INPUT_FIELD])
    return task.render_input(ex)


def _usage_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, (int, float)):
            out[k] = v - before.get(k, 0)
    extra_b = before.get("extra", {}) or {}
    out.update({f"extra.{k}": v - extra_b.get(k, 0.0) for k, v in (after.get("extra") or {}).items()})
    return out


def _latency_p50(adapted: Adapted, examples: Sequence[Example], k: int, seed: int, *,
                 warm: bool = False) -> float | None:
    """Median seconds of ``k`` single-query predictions (a seeded sample of the examples). ``warm``: with the LM
    keeping the previous query's prompt prefix, after one untimed query; None when it cannot keep one."""
    if k <= 0:
        return None
    idx = sorted(random.Random(seed).sample(range(len(examples)), min(k, len(examples))))
    if not warm:
        return _median_seconds(adapted, examples, idx)
    with adapted.lm.keep_prefix() as active:
        if not active:
            return None
        # fill the cache with a query outside the sample where there is one
        adapted.predict([examples[next((i for i in range(len(examples)) if i not in idx), idx[0])]])
        return _median_seconds(adapted, examples, idx)


def _median_seconds(adapted: Adapted, examples: Sequence[Example], idx: Sequence[int]) -> float:
    times = []
    for i in idx:
        t0 = time.perf_counter()
        adapted.predict([examples[i]])
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def _generation_report(hyps: Sequence[str], scores: np.ndarray) -> dict[str, Any]:
    return {"n": len(hyps), "mean_score": float(np.mean(scores)) if len(scores) else 0.0,
            "empty_predictions": sum(1 for h in hyps if not h.strip()),
            "mean_prediction_chars": float(np.mean([len(h) for h in hyps])) if hyps else 0.0}


def save_metrics(result: EvalResult, directory: str | Path) -> Path:
    """Write ``DIR/metrics.json`` atomically (temp file + os.replace); returns its path."""
    return write_json_atomic(Path(directory) / METRICS_FILE, result.to_json())
