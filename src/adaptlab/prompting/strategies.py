"""Prompting strategies: validated config dataclasses, their `fit`, and the strategy registry.

Every strategy is ``fit(config, task, train, dev, lm, *, embedder=None) -> Adapted``; the config's
own ``config.fit(task, train, dev, lm)`` calls it. Nothing is global except the name registry.

- ``zero_shot``: the instruction and the query only.
- ``few_shot``: ``k`` demonstrations chosen ``random`` (seeded), ``balanced`` (per class,
  round-robin so classes alternate) or ``knn`` (the most similar training examples by MiniLM
  embedding, *per query*: the prompt prefix is then not shared between queries, which the cost
  report states with ``prefix_shared: false``).
- ``calibrate``: contextual calibration (Zhao et al. 2021) as its own strategy name; it is
  ``few_shot`` with ``calibrate: true`` and ``k: 0`` by default (calibrated zero-shot; set ``k`` for
  calibrated few-shot). ``calibrate: true`` also works on ``zero_shot`` / ``few_shot`` directly.
  With kNN, ``p_cf`` is estimated per query with that query's own demonstrations.
- ``prompt_search`` (`adaptlab.prompting.search`): candidate instructions/templates/demo sets
  scored on dev; the best is kept and the spread across candidates recorded.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from adaptlab.errors import ConfigError, unknown_key_error
from adaptlab.prompting.artifact import Calibration, KnnSpec, PromptAdapted, seeded_sample
from adaptlab.prompting.calibration import CONTENT_FREE
from adaptlab.prompting.format import Demo, PromptFormat
from adaptlab.prompting.selection import (Embedder, KnnIndex, order_demos, select_balanced,
                                          select_random)

if TYPE_CHECKING:
    from adaptlab.adapted import Adapted
    from adaptlab.data import Example
    from adaptlab.lm.base import LM
    from adaptlab.tasks import Task

log = logging.getLogger(__name__)


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is not dataclasses.MISSING and isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text})
    return field(default=default, metadata={"help": text}, **kw)


class ConfigBase:
    """Parsing (`from_dict`) and type/choice validation shared by strategy configs."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, file: str | Path | None = None,
                  line: int | None = None) -> Any:
        """Build the config from a mapping; unknown keys raise ConfigError naming the closest."""
        data = dict(data or {})
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                raise unknown_key_error(str(key), names, file=file, line=line,
                                        what=f"{cls.__name__} option")
        try:
            return cls(**data)
        except ConfigError as e:
            e.file = e.file or (str(file) if file else None)
            e.line = e.line or line
            raise ConfigError(e.message, file=e.file, line=e.line, field=e.field, hint=e.hint) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> help text (for CLI help and docs)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self), vars(sys.modules[type(self).__module__]))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            coerced = _check(value, hints[f.name], f.name)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks (override)."""


def _check(value: Any, tp: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"must be one of {', '.join(map(repr, args))}, not {value!r}",
                              field=name)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return value
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], name) if len(inner) == 1 else value
    if origin in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"must be a list, not {type(value).__name__}", field=name)
        return [_check(v, args[0], name) for v in value] if args else list(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"must be true or false, not {value!r}", field=name)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"must be an integer, not {value!r}", field=name)
    if tp is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"must be a number, not {value!r}", field=name)
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"must be a string, not {value!r}", field=name)
    return float(value) if tp is float else value


@dataclass
class ZeroShotConfig(ConfigBase):
    """Instruction + query; optional contextual calibration."""

    format: Literal["plain", "chat"] = _help("plain text prompt, or the model's chat template", "plain")
    instruction: str | None = _help("instruction text; default: the task's instruction", None)
    answer_prefix: str = _help("text the answer follows, e.g. 'Answer:', 'Sentiment:'", "Answer:")
    input_prefix: str = _help("text before each input, e.g. 'Review: '", "")
    instruction_role: Literal["system", "user"] = _help("chat: instruction as system or user text",
                                                       "system")
    chat_demos: Literal["turns", "inline"] = _help(
        "chat: demonstrations as user/assistant turns or inline in the user message", "turns")
    score: Literal["sum", "mean"] = _help(
        "label score: summed log-likelihood, or per-token mean (length-normalised)", "sum")
    calibrate: bool = _help("contextual calibration (Zhao et al. 2021) of the label probabilities",
                            False)
    content_free: list[str] = _help("content-free inputs for calibration", list(CONTENT_FREE))
    max_new_tokens: int = _help("generation tasks: greedy decoding budget", 64)
    seed: int = _help("seed for demonstration selection and ordering", 0)

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("must be >= 1", field="max_new_tokens")
        if self.calibrate and not self.content_free:
            raise ConfigError("calibration needs at least one content-free input",
                              field="content_free")

    def prompt_format(self, task: "Task") -> PromptFormat:
        instruction = task.instruction if self.instruction is None else self.instruction
        return PromptFormat(instruction=instruction, style=self.format,
                            answer_prefix=self.answer_prefix, input_prefix=self.input_prefix,
                            instruction_role=self.instruction_role, chat_demos=self.chat_demos)

    def fit(self, task: "Task", train: Sequence["Example"], dev: Sequence["Example"], lm: "LM",
            *, embedder: Embedder | None = None) -> "Adapted":
        return fit_prompt(self, task, train, dev, lm, embedder=embedder)


@dataclass
class FewShotConfig(ZeroShotConfig):
    """``k`` demonstrations before the query."""

    k: int = _help("number of demonstrations", 8)
    selection: Literal["random", "balanced", "knn"] = _help(
        "random (seeded), balanced (per class, classes alternate), knn (most similar, per query)",
        "random")
    order: Literal["as_selected", "random", "by_label", "similar_last"] | None = _help(
        "demonstration order; default as_selected (random/balanced), similar_last (knn: most "
        "similar right before the query)", None)
    embedder: str = _help("knn: sentence embedder name", "minilm-l6")
    pool_size: int | None = _help("knn: cap the demonstration pool (seeded sample); default all",
                                  None)

    def validate(self) -> None:
        super().validate()
        if self.k < 0:
            raise ConfigError("must be >= 0", field="k")
        if self.order == "similar_last" and self.selection != "knn":
            raise ConfigError("order 'similar_last' needs selection 'knn'", field="order")
        if self.pool_size is not None and self.pool_size < max(self.k, 1):
            raise ConfigError("must be >= k", field="pool_size")

    @property
    def resolved_order(self) -> str:
        return self.order or ("similar_last" if self.selection == "knn" else "as_selected")


@dataclass
class CalibrateConfig(FewShotConfig):
    """Contextual calibration over zero-shot (``k: 0``, default) or few-shot prompts."""

    calibrate: bool = _help("contextual calibration (always on for this strategy)", True)
    k: int = _help("number of demonstrations (0: calibrated zero-shot)", 0)


# -- fitting --------------------------------------------------------------------------------------------
def demo_pool(task: "Task", examples: Sequence["Example"]) -> list[Demo]:
    """Training examples as demonstrations (rendered input + label key or target text)."""
    out_of = task.label_of if task.type == "classification" else task.target_of
    return [Demo(id=ex.id, input=task.render_input(ex), output=out_of(ex)) for ex in examples]


def new_adapted(task: "Task", lm: "LM", fmt: PromptFormat, cfg: ZeroShotConfig, strategy: str,
                demos: Sequence[Demo] = (), knn: KnnSpec | None = None) -> PromptAdapted:
    """A `PromptAdapted` for ``task`` before calibration."""
    if cfg.calibrate and task.type != "classification":
        raise ConfigError("calibration applies to classification tasks only", field="calibrate")
    return PromptAdapted(
        model_name=lm.name, task_name=task.name, task_type=task.type,
        labels=list(zip(task.label_keys, task.verbalizers)), input_template=task.input,
        fmt=fmt, score=cfg.score, demos=list(demos), knn=knn,
        calibration=Calibration(mode="none", content_free=tuple(cfg.content_free)),
        max_new_tokens=cfg.max_new_tokens, strategy=strategy, config=cfg.to_dict())


def apply_calibration(adapted: PromptAdapted, lm: "LM") -> None:
    """Turn on calibration: per query for kNN prompts, else estimate the static ``p_cf`` now."""
    if adapted.knn is not None:
        adapted.calibration.mode = "per_query"
    else:
        adapted.calibration.mode = "static"
        adapted.calibration.p_cf = [float(x) for x in adapted.estimate_prior(lm)]


def fit_prompt(cfg: ZeroShotConfig, task: "Task", train: Sequence["Example"],
               dev: Sequence["Example"], lm: "LM", *, embedder: Embedder | None = None,
               strategy: str | None = None) -> PromptAdapted:
    """Fit zero-shot / few-shot / calibrate: pick demonstrations, estimate calibration."""
    with FitMeter(lm) as meter:
        fmt = cfg.prompt_format(task)
        k = getattr(cfg, "k", 0)
        strategy = strategy or ("zero_shot" if not isinstance(cfg, FewShotConfig) else
                                "calibrate" if isinstance(cfg, CalibrateConfig) else "few_shot")
        demos: list[Demo] = []
        knn: KnnSpec | None = None
        index: KnnIndex | None = None
        if isinstance(cfg, FewShotConfig) and k > 0:
            pool = demo_pool(task, train)
            if cfg.selection == "knn":
                pool = seeded_sample(pool, cfg.pool_size, cfg.seed)
                emb = embedder
                if emb is None:
                    from adaptlab.embeddings import load_embedder

                    emb = load_embedder(cfg.embedder)
                t0 = time.perf_counter()
                index = KnnIndex.build(pool, emb)
                meter.extra["embed_seconds"] = time.perf_counter() - t0
                meter.extra["knn_pool"] = len(pool)
                knn = KnnSpec(pool=pool, embedder=cfg.embedder, k=k, order=cfg.resolved_order,
                              seed=cfg.seed)
            else:
                demos = select_demos(cfg, task, pool)
        adapted = new_adapted(task, lm, fmt, cfg, strategy, demos, knn)
        if index is not None:
            adapted._index = index
            adapted.set_embedder(emb)
        if cfg.calibrate:
            apply_calibration(adapted, lm)
        if adapted.knn is None:
            ctx = adapted.context("", adapted.demos, getattr(lm, "tokenizer", None))
            meter.extra["prefix_tokens"] = lm.count_tokens(ctx)
    adapted.fit_info = meter.info(lm)
    return adapted


def select_demos(cfg: FewShotConfig, task: "Task", pool: Sequence[Demo]) -> list[Demo]:
    """Static (random/balanced) selection + ordering, seeded by ``cfg.seed``."""
    labels = task.label_keys if task.type == "classification" else None
    if cfg.selection == "balanced":
        if task.type != "classification":
            raise ConfigError("balanced selection needs a classification task", field="selection")
        chosen = select_balanced(pool, cfg.k, seed=cfg.seed, labels=labels)
    else:
        chosen = select_random(pool, cfg.k, seed=cfg.seed)
    return order_demos(chosen, cfg.resolved_order, seed=cfg.seed + 1, labels=labels)


class FitMeter:
    """Measures a fit: wall seconds, LM tokens computed (→ FLOPs), process peak memory."""

    def __init__(self, lm: "LM") -> None:
        self.lm = lm
        self.extra: dict[str, Any] = {}

    def __enter__(self) -> "FitMeter":
        u = self.lm.usage
        self._t0 = time.perf_counter()
        self._computed0, self._prompt0, self._req0 = u.computed_tokens, u.prompt_tokens, u.requests
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0

    def info(self, lm: "LM") -> dict[str, Any]:
        from adaptlab.costs import count_params, forward_flops, peak_rss_bytes

        u = lm.usage
        computed = u.computed_tokens - self._computed0
        n_params = count_params(lm)
        return {"seconds": self.seconds, "computed_tokens": computed,
                "prompt_tokens": u.prompt_tokens - self._prompt0,
                "lm_requests": u.requests - self._req0,
                "flops": forward_flops(n_params, computed) if n_params else None,
                "peak_memory_bytes": peak_rss_bytes(), **self.extra}


# -- registry -------------------------------------------------------------------------------------------
FitFn = Callable[..., "Adapted"]


@dataclass(frozen=True)
class StrategySpec:
    name: str
    config_cls: type
    fit_fn: FitFn
    description: str = ""

    def parse(self, options: Mapping[str, Any] | None, *, file: str | Path | None = None,
              line: int | None = None) -> Any:
        return self.config_cls.from_dict(options, file=file, line=line)


_STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(name: str, config_cls: type, fit_fn: FitFn, *, description: str = "") -> None:
    """Register ``fit_fn(config, task, train, dev, lm, *, embedder=None) -> Adapted`` as ``name``."""
    _STRATEGIES[name] = StrategySpec(name, config_cls, fit_fn, description or
                                     (config_cls.__doc__ or "").strip().splitlines()[0])


def get_strategy(name: str, *, file: str | Path | None = None, line: int | None = None) -> StrategySpec:
    """The registered strategy ``name``; unknown names raise ConfigError with a did-you-mean hint."""
    if name not in _STRATEGIES:
        raise unknown_key_error(name, _STRATEGIES, file=file, line=line, what="strategy")
    return _STRATEGIES[name]


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def _fit_zero(cfg: ZeroShotConfig, task: "Task", train: Sequence["Example"],
              dev: Sequence["Example"], lm: "LM", *, embedder: Embedder | None = None) -> "Adapted":
    return fit_prompt(cfg, task, train, dev, lm, embedder=embedder, strategy="zero_shot")


def _fit_few(cfg: FewShotConfig, task: "Task", train: Sequence["Example"],
             dev: Sequence["Example"], lm: "LM", *, embedder: Embedder | None = None) -> "Adapted":
    return fit_prompt(cfg, task, train, dev, lm, embedder=embedder, strategy="few_shot")


def _fit_cal(cfg: CalibrateConfig, task: "Task", train: Sequence["Example"],
             dev: Sequence["Example"], lm: "LM", *, embedder: Embedder | None = None) -> "Adapted":
    return fit_prompt(cfg, task, train, dev, lm, embedder=embedder, strategy="calibrate")


register_strategy("zero_shot", ZeroShotConfig, _fit_zero)
register_strategy("few_shot", FewShotConfig, _fit_few)
register_strategy("calibrate", CalibrateConfig, _fit_cal)
