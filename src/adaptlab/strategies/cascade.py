"""``cascade``: a small fine-tuned model answers when it is sure; otherwise a large prompted model answers.

```yaml
- name: cascade
  options:
    small: {name: lora, options: {rank: 8}}              # model null: the entry's model
    large: {name: few_shot, model: large, options: {k: 8}}
    dev_limit: 100
```

Fit: the small strategy trains on the training examples; the large prompt is fitted on the gold it reads (its
label use: the first ``k``, all of them, or none) with the ``large.model`` role. Both then score one seeded
dev sample of ``dev_limit`` examples. The small model's confidence is its highest label probability; an example
is deferred when its confidence is below the threshold. Candidate thresholds: every distinct dev confidence,
plus 0 (never defer) and `ALWAYS_DEFER`; each gives a dev metric value (the task's metric, stored as
``accuracy``), a deferred fraction and an estimated cost per query (the small model's seconds, plus the deferred
share of the large model's seconds and tokens). With ``accuracy_target`` (the scenario's by default) the
threshold is the one with the fewest deferrals that reaches it on dev, or the best one when none does; without
a target, the best, ties going to fewer deferrals.

Labels: every dev example any part reads comes from that one sample. The small fit's checkpoint selection and
a large prompt's search get the same sample the threshold is chosen on, so the dev labels are the sample's size.
Training labels: the training examples (the large prompt's demonstrations are drawn from them).

Cost: ``lm`` is the large model's LM, so the evaluator reads API tokens and the token price from it; only
deferred queries reach it. ``cost()["query"]`` reports the small model's seconds per query
(``hardware_seconds``), which the cell prices at the hardware rate beside a priced API's tokens. It also reports
the deferred fraction, both measured over the predict calls since the previous ``cost()`` read (the
evaluator's main predict). Before any predict, these are the dev scoring's estimates at the chosen threshold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

import adaptlab
from adaptlab.data.example import seeded_sample
from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.files import write_json_atomic
from adaptlab.lm.base import token_price_of
from adaptlab.metrics import compute
from adaptlab.models.costs import forward_flops
from adaptlab.strategies.artifacts import (ARTIFACT_FILE, Adapted, ModelBinder, Prediction, artifact_path,
                                           load_adapted)
from adaptlab.strategies.base import ArtifactKind, FitContext, LabelUse, StrategyConfig, strategy
from adaptlab.strategies.compose import StrategyRef

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.lm.base import LM

log = logging.getLogger(__name__)

KIND = "cascade"
ALWAYS_DEFER = 1.01
"""The threshold that defers every query (confidences are probabilities, at most 1)."""
MAX_CURVE_POINTS = 50
"""The stored quality-cost curve is thinned evenly to about this many points (the chosen one always kept)."""
_EPS = 1e-12


@dataclass
class _Served:
    """Running totals of predict calls, summarised per query by `summary`."""

    n: int = 0
    deferred: int = 0
    small_seconds: float = 0.0
    small_tokens: float = 0.0
    large_tokens: float = 0.0
    small_flops: float | None = 0.0
    large_flops: float | None = 0.0

    def add(self, small: Sequence[Prediction], large: Sequence[Prediction], seconds: float,
            n_params: tuple[int | None, int | None]) -> None:
        self.n += len(small)
        self.deferred += len(large)
        self.small_seconds += seconds
        self.small_tokens += sum(p.prompt_tokens for p in small)
        self.large_tokens += sum(p.prompt_tokens for p in large)
        self.small_flops = _add_flops(self.small_flops, n_params[0], small)
        self.large_flops = _add_flops(self.large_flops, n_params[1], large)

    def summary(self, measured_on: str) -> dict[str, Any]:
        n = max(self.n, 1)
        return {"hardware_seconds": self.small_seconds / n, "deferred_fraction": self.deferred / n,
                "small_prompt_tokens": self.small_tokens / n, "large_prompt_tokens": self.large_tokens / n,
                "small_flops": None if self.small_flops is None else self.small_flops / n,
                "large_flops": None if self.large_flops is None else self.large_flops / n,
                "measured_on": measured_on, "queries": self.n}


def _add_flops(total: float | None, n_params: int | None, preds: Sequence[Prediction]) -> float | None:
    """``total`` plus 2·N·(prompt + scored tokens) of ``preds``; None once a model with unknown N ran."""
    if total is None or not preds:
        return total
    return total + forward_flops(n_params, sum(p.prompt_tokens + p.scored_tokens for p in preds)) if n_params else None


@dataclass
class Cascaded:
    """A small adapted model and the large prompt it defers to below ``threshold`` (an `Adapted`)."""

    kind: ClassVar[str] = KIND

    small: Adapted
    large: Adapted
    threshold: float
    options: dict[str, Any]
    """The cascade's strategy options."""
    task: dict[str, Any]
    """``{"name", "type", "input", "labels"}``: what `adaptlab predict` needs to render inputs."""
    large_role: str | None = None
    train_cost: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)
    dev_estimate: dict[str, Any] = field(default_factory=dict)
    """The query cost the dev scoring estimated at the chosen threshold (`_Served.summary`)."""
    _window: _Served = field(default_factory=_Served, init=False, repr=False)
    _reported: dict[str, Any] | None = field(default=None, init=False, repr=False)

    strategy: ClassVar[str] = "cascade"

    @property
    def model_name(self) -> str:
        return self.small.model_name

    @property
    def config(self) -> dict[str, Any]:
        return self.options

    @property
    def lm(self) -> LM:
        """The large model's LM: its usage counters and token price are the cascade's API share."""
        return self.large.lm

    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        """The small model on every example, then the large one (one call) on those below the threshold."""
        t0 = time.perf_counter()
        first = self.small.predict(examples, progress=progress)
        seconds = time.perf_counter() - t0
        conf = [confidence(p) for p in first]
        idx = [i for i, c in enumerate(conf) if c < self.threshold]
        second = self.large.predict([examples[i] for i in idx], progress=progress) if idx else []
        answers = dict(zip(idx, second))
        n_params = (getattr(self.small.lm, "n_params", None), getattr(self.lm, "n_params", None) if idx else None)
        self._window.add(first, second, seconds, n_params)
        return [_answer(p, answers.get(i), conf[i]) for i, p in enumerate(first)]

    def cost(self) -> dict[str, Any]:
        """Train, query, labels, fit and search facts (module docstring). The query's per-query figures cover
        the predict calls since the previous read (the dev estimate before any)."""
        if self._window.n:
            self._reported, self._window = self._window.summary("predict"), _Served()
        large_query = (self.large.cost() or {}).get("query") or {}
        query = {**(self._reported or self.dev_estimate), "threshold": self.threshold,
                 "prefix_shared": large_query.get("prefix_shared"),
                 "demonstrations": large_query.get("demonstrations"),
                 "small_model": self.small.model_name, "large_model": self.large.model_name,
                 "large_role": self.large_role}
        return {"train": dict(self.train_cost), "query": query, "labels": dict(self.labels),
                "fit": dict(self.fit_info), "search": self.search}

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "adaptlab_version": adaptlab.__version__, "model": self.model_name,
                "strategy": self.strategy, "config": self.options, "threshold": self.threshold,
                "small": "small", "large": "large", "large_role": self.large_role,
                "large_model": self.large.model_name, "task": self.task,
                "train": {"cost": self.train_cost, "labels": self.labels, "fit": self.fit_info,
                          "dev_estimate": self.dev_estimate},
                "search": self.search}

    def save(self, directory: str | Path) -> Path:
        """``small/`` and ``large/`` (each saved by its own artifact) and ``adapted.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ARTIFACT_FILE).unlink(missing_ok=True)  # an incomplete save never looks complete
        self.small.save(directory / "small")
        self.large.save(directory / "large")
        write_json_atomic(directory / ARTIFACT_FILE, self.to_json())
        return directory


def confidence(p: Prediction) -> float:
    """The small model's confidence in ``p``: its highest label probability."""
    if not p.scores:
        raise AdaptlabError(f"the cascade's small model gave no label probabilities for example {p.id}",
                            hint="the small strategy must score the labels (a classification fine-tune)")
    return float(max(p.scores.values()))


def _answer(small: Prediction, large: Prediction | None, conf: float) -> Prediction:
    """The answering model's prediction; a deferred query's tokens are both models'."""
    if large is None:
        return replace(small, extra={**small.extra, "deferred": False, "confidence": conf})
    return Prediction(id=small.id, pred=large.pred, scores=large.scores, logprobs=large.logprobs, raw=large.raw,
                      prompt_tokens=small.prompt_tokens + large.prompt_tokens,
                      scored_tokens=small.scored_tokens + large.scored_tokens,
                      extra={**large.extra, "deferred": True, "confidence": conf, "small_pred": small.pred})


def load_cascade(directory: Path, data: dict[str, Any], binder: ModelBinder) -> Cascaded:
    """Loader for ``kind: cascade``: both parts through `load_adapted` (the large prompt's LM via ``binder``)."""
    threshold = data["threshold"]
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValueError(f"'threshold' must be a finite number, got {threshold!r}")
    small = load_adapted(artifact_path(directory, data["small"], field="small"), binder)
    large = load_adapted(artifact_path(directory, data["large"], field="large"), binder)
    train = data.get("train") or {}
    return Cascaded(small=small, large=large, threshold=float(threshold), options=dict(data.get("config") or {}),
                    task=dict(data["task"]), large_role=data.get("large_role"),
                    train_cost=dict(train.get("cost") or {}), labels=dict(train.get("labels") or {}),
                    search=dict(data.get("search") or {}), fit_info=dict(train.get("fit") or {}),
                    dev_estimate=dict(train.get("dev_estimate") or {}))


CASCADE_ARTIFACT = ArtifactKind(KIND, load_cascade)


@strategy("cascade", family="finetune", artifact=CASCADE_ARTIFACT, experiment_defaults=("epochs", "accuracy_target"),
          arm="cascade")
class CascadeConfig(StrategyConfig):
    """A small fine-tuned model answers when confident, else a large prompted model (classification)."""

    small: StrategyRef
    """The small model's fine-tuning strategy (``{name: lora, options: {...}}``); ``model`` null: the entry's
    model."""
    large: StrategyRef
    """The large model's prompting strategy it defers to (``{name: few_shot, model: large, options: {k: 8}}``);
    ``model``: its role in the experiment's ``models:`` (null: the entry's model)."""
    dev_limit: int = Field(100, ge=1)
    """Dev examples (a seeded sample) both models score to choose the threshold; they count as labels used (the
    small fit's checkpoint selection and a large prompt's search read the same sample)."""
    accuracy_target: float | None = Field(None, ge=0)
    """Dev metric value to reach: the threshold with the fewest deferrals that reaches it (the best one when none
    does); null: the best threshold, ties to fewer deferrals. Default: the scenario's ``accuracy_target``."""
    epochs: int | None = Field(None, ge=1)
    """Epochs of the small model when its own options do not set them (default: the experiment's ``epochs``;
    ignored for a small strategy without epochs)."""

    @field_validator("small", "large", mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v  # ``small: lora``

    @field_validator("small")
    @classmethod
    def _small(cls, v: StrategyRef) -> StrategyRef:
        return v.require_family("finetune", "small")

    @field_validator("large")
    @classmethod
    def _large(cls, v: StrategyRef) -> StrategyRef:
        return v.require_family("prompt", "large")

    def small_config(self) -> StrategyConfig:
        """The small strategy's config, with ``epochs`` filled in where its options leave it unset."""
        return self.small.config_with_epochs(self.epochs)

    def label_use(self) -> LabelUse:
        """Each training size, skipping sizes below the ``k`` either part needs (the large prompt's demonstrations)."""
        uses = (self.small_config().label_use(), self.large.config.label_use())
        return LabelUse("train_sizes", max((u.k for u in uses if u.mode != "none"), default=0))

    def roles(self) -> set[str]:
        return self.small.roles() | self.large.roles()

    def learns_labels(self) -> bool:
        return True

    def large_gold(self, train: Sequence[Example]) -> list[Example]:
        """The training examples the large prompt reads: the first ``k``, all, or none (its label use)."""
        use = self.large.config.label_use()
        return [] if use.mode == "none" else list(train[:use.k]) if use.mode == "first_k" else list(train)

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> Cascaded:
        if task.type != "classification":
            raise ConfigError(f"cascade works for classification tasks only (task '{task.name}' is {task.type})",
                              field="strategy", hint="it defers on the small model's label probabilities")
        if not dev:
            raise ConfigError("cascade needs a non-empty dev split to choose its threshold", field="dev_limit")
        dev_sample = seeded_sample(list(dev), self.dev_limit, ctx.seed)
        small = self.small_config().fit(task, train, dev_sample, ctx.with_role(self.small.model))
        large_ctx = ctx.with_role(self.large.model)
        large_lm = large_ctx.lm()
        before = asdict(large_lm.usage)
        t0 = time.perf_counter()
        large = self.large.config.fit(task, self.large_gold(train), dev_sample, large_ctx)
        large_seconds = time.perf_counter() - t0
        scores = score_dev(task, small, large, dev_sample)
        spent = _delta(before, asdict(large_lm.usage))
        points = threshold_curve(task, scores)
        best, chosen_by = choose(points, self.accuracy_target)
        threshold = points[best]["threshold"]
        log.info("cascade: threshold %.4f (%s) defers %.0f%% of %d dev examples, dev %s %.4f", threshold,
                 chosen_by, 100 * points[best]["deferred"], len(dev_sample), task.metric, points[best]["accuracy"])
        estimate = _Served()
        deferred = [lp for c, lp in zip(scores.confidence, scores.large) if c < threshold]
        estimate.add(scores.small, deferred, scores.small_seconds,
                     (getattr(small.lm, "n_params", None), getattr(large_lm, "n_params", None)))
        small_cost, large_cost = small.cost() or {}, large.cost() or {}
        return Cascaded(
            small=small, large=large, threshold=threshold, options=self.to_dict(), large_role=large_ctx.role,
            task={"name": task.name, "type": task.type, "input": task.input,
                  "labels": [{"key": k, "verbalizer": v} for k, v in task.labels.items()]},
            train_cost=train_cost(small_cost.get("train") or {}, large_cost.get("train") or {}, large_seconds,
                                  scores, spent, large_lm),
            labels={"train": max(_count(small_cost, "train", len(train)), _count(large_cost, "train", 0)),
                    "dev": len(dev_sample)},
            search=search_record(self, task, scores, points, best, chosen_by),
            fit_info={"small": small_cost.get("fit"), "large": large_cost.get("fit"),
                      "small_strategy": self.small.name, "large_strategy": self.large.name},
            dev_estimate=estimate.summary("dev"))


@dataclass
class DevScores:
    """Both models on the dev sample: predictions, the small model's confidences, seconds and large tokens."""

    refs: list[str]
    small: list[Prediction]
    large: list[Prediction]
    confidence: np.ndarray
    small_seconds: float
    large_seconds: float
    large_tokens: float
    """Large-model tokens per query: API-reported input + output, else prompt + generated tokens."""
    flops: int
    """Forward FLOPs of the dev scoring (2·N·tokens of each model whose N is known)."""

    @property
    def n(self) -> int:
        return len(self.refs)


def score_dev(task: Task, small: Adapted, large: Adapted, dev: Sequence[Example]) -> DevScores:
    """Time both models on ``dev`` and count the large model's tokens."""
    t0 = time.perf_counter()
    small_preds = small.predict(dev)
    t1 = time.perf_counter()
    before = asdict(large.lm.usage)
    t2 = time.perf_counter()
    large_preds = large.predict(dev)
    t3 = time.perf_counter()
    used = _delta(before, asdict(large.lm.usage))
    reported = used.get("reported_input_tokens", 0) + used.get("reported_output_tokens", 0)
    tokens = reported or used.get("prompt_tokens", 0) + used.get("generated_tokens", 0)
    n_small, n_large = getattr(small.lm, "n_params", None), getattr(large.lm, "n_params", None)
    flops = forward_flops(n_small, sum(p.prompt_tokens + p.scored_tokens for p in small_preds)) if n_small else 0
    flops += forward_flops(n_large, used.get("computed_tokens", 0)) if n_large else 0
    return DevScores([task.label_of(ex) for ex in dev], small_preds, large_preds,
                     np.array([confidence(p) for p in small_preds]), t1 - t0, t3 - t2, tokens / max(len(dev), 1),
                     flops)


def threshold_curve(task: Task, scores: DevScores) -> list[dict[str, Any]]:
    """One point per candidate threshold in increasing order, each deferring more dev queries than the last
    (thresholds that defer the same queries: the lowest kept)."""
    n = scores.n
    small_spq, large_spq = scores.small_seconds / n, scores.large_seconds / n
    candidates = sorted({0.0, ALWAYS_DEFER, *(float(c) for c in scores.confidence)})
    points: list[dict[str, Any]] = []
    seen: set[int] = set()
    for t in candidates:
        defer = scores.confidence < t
        k = int(defer.sum())
        if k in seen:
            continue
        seen.add(k)
        preds = [lp.pred if d else sp.pred for sp, lp, d in zip(scores.small, scores.large, defer)]
        frac = k / n
        points.append({"threshold": t, "deferred": frac,
                       "accuracy": float(compute(task.metric, preds, scores.refs, labels=task.label_keys)),
                       "seconds_per_query": small_spq + frac * large_spq,
                       "tokens_per_query": frac * scores.large_tokens})
    return points


def choose(points: Sequence[dict[str, Any]], target: float | None) -> tuple[int, str]:
    """(index, ``target`` | ``best``): the fewest-deferral point reaching ``target``; else the best point, the
    fewest deferrals among equals (``points`` in increasing deferral)."""
    if target is not None:
        hit = next((i for i, p in enumerate(points) if p["accuracy"] >= target - _EPS), None)
        if hit is not None:
            return hit, "target"
    top = max(p["accuracy"] for p in points)
    if target is not None:
        log.warning("cascade: no threshold reaches accuracy_target %.4f on dev (best %.4f); taking the best",
                    target, top)
    return next(i for i, p in enumerate(points) if p["accuracy"] >= top - _EPS), "best"


def thin(points: Sequence[dict[str, Any]], keep: int, limit: int = MAX_CURVE_POINTS) -> list[dict[str, Any]]:
    """At most about ``limit`` evenly spaced points (ends and index ``keep`` always included)."""
    if len(points) <= limit:
        return list(points)
    idx = {round(i * (len(points) - 1) / (limit - 1)) for i in range(limit)} | {keep}
    return [points[i] for i in sorted(idx)]


def search_record(cfg: CascadeConfig, task: Task, scores: DevScores, points: list[dict[str, Any]], best: int,
                  chosen_by: str) -> dict[str, Any]:
    """``cost()["search"]``: the chosen threshold, how, and the thinned quality-cost curve."""
    return {"kind": KIND, "metric": task.metric, "threshold": points[best]["threshold"], "chosen_by": chosen_by,
            "accuracy_target": cfg.accuracy_target, "dev_n": scores.n, "deferred": points[best]["deferred"],
            "accuracy": points[best]["accuracy"], "small_dev_accuracy": points[0]["accuracy"],
            "large_dev_accuracy": points[-1]["accuracy"],
            "small_seconds_per_query": scores.small_seconds / scores.n,
            "large_seconds_per_query": scores.large_seconds / scores.n,
            "large_tokens_per_query": scores.large_tokens, "curve_points": len(points),
            "curve": thin(points, best)}


def train_cost(small: dict[str, Any], large: dict[str, Any], large_wall: float, scores: DevScores,
               spent: dict[str, Any], large_lm: LM) -> dict[str, Any]:
    """The small fit's train cost (its keys kept) plus the large fit and the dev scoring; ``api_*_tokens``: what
    the large model's API reported over its fit and the dev scoring."""
    large_seconds = large.get("seconds") if isinstance(large.get("seconds"), (int, float)) else large_wall
    dev_seconds = scores.small_seconds + scores.large_seconds
    small_seconds = float(small.get("seconds") or 0.0)
    flops = small.get("flops")
    if isinstance(flops, (int, float)):
        flops += int(large.get("flops") or 0) + scores.flops
    peaks = [p for p in (small.get("peak_memory_bytes"), large.get("peak_memory_bytes")) if isinstance(p, int)]
    return {**small, "seconds": small_seconds + float(large_seconds) + dev_seconds, "flops": flops,
            "peak_memory_bytes": max(peaks) if peaks else None,
            "trainable_params": small.get("trainable_params"),
            "api_input_tokens": int(spent.get("reported_input_tokens", 0)),
            "api_output_tokens": int(spent.get("reported_output_tokens", 0)),
            "token_price": token_price_of(large_lm),
            "parts": {"small_seconds": small_seconds, "large_seconds": float(large_seconds),
                      "dev_seconds": dev_seconds, "small_flops": small.get("flops"), "large_flops": large.get("flops"),
                      "dev_flops": scores.flops}}


def _count(cost: dict[str, Any], key: str, default: int) -> int:
    labels = cost.get("labels")
    value = labels.get(key) if isinstance(labels, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, (int, float))}
