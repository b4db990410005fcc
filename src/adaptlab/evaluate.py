"""The evaluator: scores any `Adapted` on a split and writes ``metrics.json`` in one schema.

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

import json
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import adaptlab
from adaptlab.adapted import RAW_INPUT_FIELD, Prediction, load_adapted, write_json_atomic
from adaptlab.errors import DataError

if TYPE_CHECKING:
    from adaptlab.adapted import Adapted
    from adaptlab.data import Example
    from adaptlab.lm.base import LM
    from adaptlab.tasks import Task

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


def evaluate(adapted: "Adapted", lm: "LM", task: "Task", examples: Sequence["Example"], *,
             confidence: float = 0.95, seed: int = 0, progress: bool = False, split: str = "test",
             latency_sample: int = 10, n_resamples: int = 1000) -> EvalResult:
    """Predict ``examples`` with ``adapted`` through ``lm`` and measure quality and cost."""
    from adaptlab.costs import count_params, forward_flops
    from adaptlab.metrics import bootstrap_ci, classification_report, per_example

    from adaptlab.data import check_examples

    if not examples:
        raise DataError(f"no {split} examples to evaluate", file=task.source, field=split)
    check_examples(task, examples, split, unique_ids=True)  # before spending compute on predictions
    before = asdict(lm.usage)
    t0 = time.perf_counter()
    preds = adapted.predict(examples, lm, progress=progress)
    seconds = time.perf_counter() - t0
    usage = _usage_delta(before, asdict(lm.usage))
    if [p.id for p in preds] != [ex.id for ex in examples]:
        raise RuntimeError(f"{type(adapted).__name__}.predict returned predictions out of order")

    classification = task.type == "classification"
    refs = [task.label_of(ex) if classification else task.target_of(ex) for ex in examples]
    hyps = [p.pred for p in preds]
    labels = task.label_keys if classification else None
    ci = bootstrap_ci(task.metric, hyps, refs, n_resamples=n_resamples, confidence=confidence,
                      seed=seed, labels=labels)
    scores = per_example(task.metric, hyps, refs)
    report = (classification_report(refs, hyps, task.label_keys) if classification
              else _generation_report(hyps, scores))

    n = len(examples)
    n_params = count_params(lm)
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
        "latency_p50_s": _latency_p50(adapted, lm, examples, latency_sample, seed),
        "latency_p50_warm_s": _latency_p50(adapted, lm, examples, latency_sample, seed, warm=True),
        "prefix_shared": own.get("query", {}).get("prefix_shared"),
    })
    rows = []
    for ex, p, ref, s in zip(examples, preds, refs, scores):
        row: dict[str, Any] = {"id": ex.id, "input": _input_text(task, ex), "gold": ref,
                               "pred": p.pred}
        if classification:
            row["correct"] = bool(s >= 1.0)
            row["scores"] = p.scores
            row["logprobs"] = p.logprobs
        else:
            row["score"] = float(s)
            row["raw"] = p.raw
        rows.append(row)
    search = (getattr(adapted, "fit_info", None) or {}).get("search")
    return EvalResult(
        task=task.name, model=getattr(adapted, "model_name", lm.name),
        strategy=getattr(adapted, "strategy", adapted.kind),
        config=dict(getattr(adapted, "config", {}) or {}), split=split, n=n,
        metric={"name": task.metric, "value": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                "confidence": confidence},
        report=report, cost={"train": train, "query": query}, predictions=rows, usage=usage,
        search=search)


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


def _latency_p50(adapted: "Adapted", lm: "LM", examples: Sequence["Example"], k: int,
                 seed: int, *, warm: bool = False) -> float | None:
    """Median seconds of ``k`` single-query predict calls (seeded sample of the examples). ``warm``: with
    the backend keeping the previous query's prompt prefix (`HFLM.keep_prefix`), after one untimed query;
    None when the backend cannot keep one."""
    if k <= 0:
        return None
    import random
    from contextlib import nullcontext

    idx = sorted(random.Random(seed).sample(range(len(examples)), min(k, len(examples))))
    keep = getattr(lm, "keep_prefix", None)
    if warm and not callable(keep):
        return None
    with keep() if warm else nullcontext(True) as active:
        if not active:
            return None
        if warm:  # fill the cache with a query outside the sample where there is one
            adapted.predict([examples[next((i for i in range(len(examples)) if i not in idx), idx[0])]], lm)
        times = []
        for i in idx:
            t0 = time.perf_counter()
            adapted.predict([examples[i]], lm)
            times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def _generation_report(hyps: Sequence[str], scores: np.ndarray) -> dict[str, Any]:
    return {"n": len(hyps), "mean_score": float(np.mean(scores)) if len(scores) else 0.0,
            "empty_predictions": sum(1 for h in hyps if not h.strip()),
            "mean_prediction_chars": float(np.mean([len(h) for h in hyps])) if hyps else 0.0}


def save_metrics(result: EvalResult, directory: str | Path) -> Path:
    """Write ``DIR/metrics.json`` atomically (temp file + os.replace); returns its path."""
    return write_json_atomic(Path(directory) / METRICS_FILE, result.to_json())


# -- high-level entry points (the CLI wires these) ------------------------------------------------------
def run_prompt(task: "Task", lm: "LM | Callable[[], LM]", strategy_name: str,
               options: Mapping[str, Any] | None = None, *, out_dir: str | Path, split: str = "test",
               limit: int | None = None, seed: int = 0, progress: bool = True, embedder: Any = None,
               latency_sample: int = 10) -> EvalResult:
    """Load splits, fit ``strategy_name`` with ``options``, evaluate on ``split``; write
    ``DIR/adapted.json`` (+ artifact files) and ``DIR/metrics.json``.

    ``lm`` is an `LM`, or a function building one: it is then called only after the strategy, its
    options, the output folder and the data have been checked (bad input fails before a model loads).
    ``limit`` evaluates a seeded random subset of that many examples (kept in file order).
    ``seed`` seeds the split carving, the strategy (unless ``options`` sets ``seed``), the subset
    and the bootstrap. ``latency_sample`` single-query calls measure the p50 latency.
    """
    import adaptlab.prompting  # noqa: F401  (registers the prompting strategies)
    from adaptlab.adapted import prepare_output_dir
    from adaptlab.costs import dir_bytes
    from adaptlab.data import absent_labels, check_examples, load_splits
    from adaptlab.prompting.artifact import seeded_sample
    from adaptlab.prompting.strategies import get_strategy

    spec = get_strategy(strategy_name)
    options = dict(options or {})
    cfg = spec.parse(options)
    if "seed" not in options and hasattr(cfg, "seed"):
        cfg.seed = seed
    prepare_output_dir(out_dir)
    splits = load_splits(task, seed=seed)
    examples = seeded_sample(splits[split], limit, seed)
    if not examples:
        raise DataError(f"no {split} examples to evaluate", file=task.source, field=f"data.{split}",
                        hint=f"add data.{split} to the task" if split != "train" else None)
    for name in ("train", "dev"):  # demonstrations, calibration and search read their labels
        check_examples(task, splits[name], name)
    check_examples(task, examples, split, unique_ids=True)
    absent = absent_labels(task, splits.train) if splits.train else []
    if absent:
        log.warning("%d label(s) have no training examples (%s): demonstrations cannot show them",
                    len(absent), ", ".join(absent))
    if callable(lm) and not hasattr(lm, "loglikelihood"):
        lm = lm()
    log.info("fitting %s on %s (%d train, %d dev)", strategy_name, task.name, len(splits.train),
             len(splits.dev))
    resources = {"embedder": embedder} if embedder is not None else {}
    adapted = spec.fit_fn(cfg, task, splits.train, splits.dev, lm, **resources)
    out = Path(out_dir)
    adapted.save(out)
    artifact_bytes = dir_bytes(out) - ((out / METRICS_FILE).stat().st_size
                                       if (out / METRICS_FILE).is_file() else 0)
    result = evaluate(adapted, lm, task, examples, seed=seed, progress=progress, split=split,
                      latency_sample=latency_sample)
    result.cost["train"]["artifact_bytes"] = artifact_bytes
    save_metrics(result, out)
    return result


def read_input_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (one JSON object a line) for `predict_texts`."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read input file: {e.strerror}", file=path) from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", file=path, line=i) from None
        if not isinstance(row, dict):
            raise DataError("each line must be a JSON object", file=path, line=i)
        rows.append(row)
    return rows


def _single_input_field(adapted_dir: str | Path) -> str | None:
    """The one field the artifact's input template uses (so a bare text renders like a data row), or None.

    With a one-field template such as ``"Review: {{ text }}"`` a ``--text`` input fills ``text``; with
    several fields (or none) the text is used verbatim as the rendered input.
    """
    from adaptlab.tasks import template_fields

    try:
        template = json.loads((Path(adapted_dir) / "adapted.json").read_text())["task"]["input"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    names = sorted(template_fields(template))
    return names[0] if len(names) == 1 else None


def predict_texts(adapted_dir: str | Path, lm_factory: Callable[[str], "LM"],
                  texts: Sequence[str] = (), *, rows: Sequence[Mapping[str, Any]] = (),
                  progress: bool = False) -> list[Prediction]:
    """Predict with the artifact in ``adapted_dir``; ``lm_factory(model_name)`` builds its LM.

    ``texts`` fill the input template's field when it has exactly one, else are used verbatim; ``rows`` are example fields rendered through
    the artifact's input template (a row's ``id``/``idx`` becomes the prediction id).
    """
    from adaptlab.data import Example

    adapted = load_adapted(adapted_dir)
    field = _single_input_field(adapted_dir)
    examples = [Example(id=f"text:{i + 1}", fields={field or RAW_INPUT_FIELD: t}, source="<text>", line=i + 1)
                for i, t in enumerate(texts)]
    for i, row in enumerate(rows):
        rid = row.get("id", row.get("idx", f"input:{i + 1}"))
        examples.append(Example(id=str(rid), fields=dict(row), source="<input>", line=i + 1))
    if not examples:
        return []
    # Fine-tuned artifacts carry their own weights: they score through `as_lm()` (the adapted model),
    # prompt artifacts through the LM the factory builds for the model they name.
    lm = adapted.as_lm() if hasattr(adapted, "as_lm") else lm_factory(adapted.model_name)
    return adapted.predict(examples, lm, progress=progress)
