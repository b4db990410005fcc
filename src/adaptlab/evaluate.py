"""The evaluator: scores any `Adapted` on a split and writes ``metrics.json`` in one schema. It never asks how
the model was adapted: it calls ``predict`` and reads the artifact's ``lm`` (usage counters, parameters, prefix
keeping, batch size, token price) and ``cost()``.

Schema ``adaptlab.metrics/1`` (every strategy, prompting or fine-tuning)::

    {"schema", "task", "model", "strategy", "config", "split", "n",
     "metric": {"name", "value", "ci_low", "ci_high", "confidence"},
     "report": {...classification_report, or generation summary...},
     "cost": {"train": {"seconds", "flops", "peak_memory_bytes", "trainable_params", "artifact_bytes", ...},
              "labels": {"train", "dev"} (labels the artifact read: training and dev; absent if not counted),
              "query": {"prompt_tokens", "flops", "flops_amortized", "latency_s", "latency_p50_s",
                        "latency_p50_low_s", "latency_p50_high_s", "latency_p50_warm_s",
                        "latency_p50_warm_low_s", "latency_p50_warm_high_s", "throughput_qps",
                        "throughput_batch_size", "throughput": [{"batch_size", "qps"}], "api_input_tokens",
                        "api_output_tokens", "api_unreported_requests", "token_price", "measure_seconds",
                        "prefix_shared", ...}},
     "predictions": [{"id", "input", "gold", "pred", "correct" | "score", ...}],
     "usage": {...LM usage delta of the main predict...}, "adaptlab_version", ["search"]}

Per-query cost: ``prompt_tokens`` is the mean context tokens per query (with per-query calibration,
its content-free prompts included); ``flops`` = 2·N·(prompt + scored/generated tokens) per query when
served alone, ``flops_amortized`` the same from the tokens the backend actually computed in the
batched run (prefix cache reuse included); ``latency_s`` = seconds of the whole batched predict / n.

Latency: ``latency_p50_s`` = median of ``EvalSettings.latency_sample`` single-query predict calls on a seeded
sample (real serving latency, no batching); ``latency_p50_warm_s`` the same with the backend keeping the
previous query's prompt prefix, as a serving engine with a prefix cache does (None when the backend cannot keep
one). ``*_low_s``/``*_high_s``: a distribution-free 95% (``EvalSettings.confidence``) interval of that median,
the order statistics x_(j) and x_(k+1-j) of the k timings with the largest j such that P(Binomial(k, 1/2) < j)
<= (1 - confidence) / 2 (coverage >= confidence for any continuous distribution; k = 20 gives x_(6)..x_(15),
96%); None when k is too small for that coverage (k < 6 at 95%).

Throughput (``throughput``, ``throughput_qps`` at ``throughput_batch_size``, the best): queries per second of
batched prediction. Batch size b = queries handed to one ``predict`` call, with the LM scoring b sequences per
forward pass where it has a batch size (`adaptlab.lm.base.batch_size_set`) and keeping its prompt prefix across
calls (``keep_prefix``), so a shared prefix is computed once as in the main predict. Points: the main predict
itself (b = the LM's batch size, at most n; n for a backend that batches on its own terms), b = 1 (when
asked for) from the single-query timings (k / their sum, warm ones where measured), and each other size of
``EvalSettings.throughput_batch_sizes`` timed on a seeded sample of ``throughput_sample`` examples (a size
above the sample is the whole sample in one call). ``measure_seconds``: wall seconds these measurements took
beyond the main predict (``latency``, ``throughput``).

API tokens (per query, from the counts the server's answers reported over the main predict only, divided by
n): ``api_input_tokens``, ``api_output_tokens``; ``api_unreported_requests`` counts answers without them (0 for
local backends). ``token_price``: ``{"input_per_mtok", "output_per_mtok", "source"}`` of a model behind a
priced API (`adaptlab.lm.base.token_price_of`), else None. Timing an API model sends ``2 x latency_sample`` more
single requests and ``throughput_sample`` more queries per extra batch size; they are billed but not counted.
"""

from __future__ import annotations

import logging
import math
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
from adaptlab.lm.base import batch_size_of, batch_size_set, token_price_of
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
    """How an evaluation measures: interval, resamples, latency sample, throughput sizes."""

    confidence: float = 0.95
    n_resamples: int = 1000
    latency_sample: int = 20
    """Single-query predictions timed for the median latency and its interval (0: none). Each is one predict
    call, done twice (cold and warm): 20 gives a 95% interval from the 6th to the 15th fastest, 10 only from
    the 2nd to the 9th, at twice the cost of 10."""
    latency_max_seconds: float | None = 120.0
    """Stop a latency series (cold or warm) once it has taken this long and holds at least `MIN_TIMINGS` timings
    (None: always ``latency_sample``): a many-shot prompt computed cold takes seconds per query on a CPU."""
    throughput_batch_sizes: tuple[int, ...] = (1, 8, 32)
    """Batch sizes whose queries per second are measured (empty: no throughput measurement)."""
    throughput_sample: int = 64
    """Examples (a seeded sample) timed at each batch size the main predict and the latency timings do not
    already cover (0: no throughput measurement)."""


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
              else _generation_report(hyps, refs, scores, settings, seed))

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
        **_timings(adapted, examples, seconds, settings, seed),
        **_api_cost(lm, usage, n),
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
        report=report, cost={"train": train, "query": query, **_labels(own)}, predictions=rows, usage=usage,
        search=own.get("search"))


def _labels(own: Mapping[str, Any]) -> dict[str, Any]:
    """``{"labels": {"train": n, "dev": m}}`` when the artifact counts the labels it read, else nothing."""
    labels = own.get("labels")
    return {"labels": {"train": labels.get("train"), "dev": labels.get("dev", 0)}} if isinstance(labels, Mapping) else {}


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


def _api_cost(lm: Any, usage: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Per-query tokens an API reported over the main predict, and its price (module docstring)."""
    return {"api_input_tokens": usage.get("reported_input_tokens", 0) / n,
            "api_output_tokens": usage.get("reported_output_tokens", 0) / n,
            "api_unreported_requests": int(usage.get("unreported_requests", 0)),
            "token_price": token_price_of(lm)}


def _timings(adapted: Adapted, examples: Sequence[Example], main_seconds: float, settings: EvalSettings,
             seed: int) -> dict[str, Any]:
    """Single-query latency (cold and warm) with intervals, and batched throughput (module docstring)."""
    t0 = time.perf_counter()
    cold = _single_times(adapted, examples, settings, seed)
    warm = _single_times(adapted, examples, settings, seed, warm=True)
    t1 = time.perf_counter()
    points = _throughput(adapted, examples, main_seconds, warm or cold, settings, seed)
    t2 = time.perf_counter()
    best = max(points, key=lambda p: p["qps"], default=None)
    out: dict[str, Any] = {}
    for name, times in (("latency_p50", cold), ("latency_p50_warm", warm)):
        low, high = median_interval(times or [], settings.confidence)
        out.update({f"{name}_s": float(statistics.median(times)) if times else None,
                    f"{name}_low_s": low, f"{name}_high_s": high})
    out.update({"throughput_qps": best["qps"] if best else None,
                "throughput_batch_size": best["batch_size"] if best else None, "throughput": points,
                "measure_seconds": {"latency": t1 - t0, "throughput": t2 - t1}})
    return out


def median_interval(times: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Distribution-free interval of the median of ``times``: (x_(j), x_(k+1-j)) for the largest j with
    P(Binomial(k, 1/2) < j) <= (1 - confidence) / 2; (None, None) when no j reaches that coverage."""
    k = len(times)
    xs = sorted(times)
    tail, cdf, j = (1.0 - confidence) / 2, 0.0, 0
    for i in range(k):
        cdf += math.comb(k, i) / 2 ** k  # P(B <= i)
        if cdf > tail + 1e-12:
            break
        j = i + 1
    if j == 0:
        return None, None
    return float(xs[j - 1]), float(xs[k - j])


MIN_TIMINGS = 6
"""The fewest single-query timings that give a 95% interval of the median (`median_interval`)."""


def _single_times(adapted: Adapted, examples: Sequence[Example], settings: EvalSettings, seed: int, *,
                  warm: bool = False) -> list[float] | None:
    """Seconds of ``latency_sample`` single-query predictions (a seeded sample of the examples, in a seeded order;
    cut short by ``latency_max_seconds``). ``warm``: with the LM keeping the previous query's prompt prefix, after
    one untimed query; None when it cannot keep one (or the sample is 0)."""
    k = settings.latency_sample
    if k <= 0:
        return None
    idx = random.Random(seed).sample(range(len(examples)), min(k, len(examples)))
    if not warm:
        return _seconds_each(adapted, examples, idx, settings.latency_max_seconds)
    with adapted.lm.keep_prefix() as active:
        if not active:
            return None
        # fill the cache with a query outside the sample where there is one
        adapted.predict([examples[next((i for i in range(len(examples)) if i not in idx), idx[0])]])
        return _seconds_each(adapted, examples, idx, settings.latency_max_seconds)


def _seconds_each(adapted: Adapted, examples: Sequence[Example], idx: Sequence[int],
                  max_seconds: float | None) -> list[float]:
    times: list[float] = []
    for i in idx:
        if max_seconds is not None and len(times) >= MIN_TIMINGS and sum(times) >= max_seconds:
            log.info("latency: %d timings in %.0f s (latency_max_seconds); stopping", len(times), sum(times))
            break
        t0 = time.perf_counter()
        adapted.predict([examples[i]])
        times.append(time.perf_counter() - t0)
    return times


def _throughput(adapted: Adapted, examples: Sequence[Example], main_seconds: float,
                single: Sequence[float] | None, settings: EvalSettings, seed: int) -> list[dict[str, Any]]:
    """``[{"batch_size", "qps"}]`` by batch size: the main predict, the single-query timings (b = 1) and the
    other sizes timed on a seeded sample (module docstring); empty when disabled."""
    sizes = sorted({b for b in settings.throughput_batch_sizes if b >= 1})
    m = min(len(examples), settings.throughput_sample)
    if not sizes or m <= 0:
        return []
    n = len(examples)
    own = batch_size_of(adapted.lm)
    qps = {min(n, own) if own else n: n / max(main_seconds, 1e-9)}
    if single and 1 in sizes:
        qps.setdefault(1, len(single) / max(sum(single), 1e-9))
    idx = sorted(random.Random(seed).sample(range(n), m))
    sample = [examples[i] for i in idx]
    for b in sizes:
        b = min(b, m)
        if b not in qps:
            qps[b] = m / _batched_seconds(adapted, sample, b)
    return [{"batch_size": b, "qps": float(q)} for b, q in sorted(qps.items())]


def _batched_seconds(adapted: Adapted, sample: Sequence[Example], b: int) -> float:
    """Wall seconds to predict ``sample`` in calls of ``b`` queries, the LM batching ``b`` sequences per forward
    pass where it can and keeping its prompt prefix between calls where it can."""
    lm = adapted.lm
    with lm.keep_prefix(), batch_size_set(lm, b):
        t0 = time.perf_counter()
        for i in range(0, len(sample), b):
            adapted.predict(sample[i:i + b])
        return max(time.perf_counter() - t0, 1e-9)


SECOND_METRICS = ("chrf", "bleu")
"""Corpus metrics every generation report carries besides the task's own (translation: chrF and BLEU)."""


def _generation_report(hyps: Sequence[str], refs: Sequence[str], scores: np.ndarray, settings: EvalSettings,
                       seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(hyps), "mean_score": float(np.mean(scores)) if len(scores) else 0.0,
                           "empty_predictions": sum(1 for h in hyps if not h.strip()),
                           "mean_prediction_chars": float(np.mean([len(h) for h in hyps])) if hyps else 0.0}
    for name in SECOND_METRICS:  # with its interval, from the same resampling scheme as the main metric
        ci = bootstrap_ci(name, hyps, refs, n_resamples=settings.n_resamples, confidence=settings.confidence,
                          seed=seed)
        out[name] = {"value": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}
    return out


def save_metrics(result: EvalResult, directory: str | Path) -> Path:
    """Write ``DIR/metrics.json`` atomically (temp file + os.replace); returns its path."""
    return write_json_atomic(Path(directory) / METRICS_FILE, result.to_json())
