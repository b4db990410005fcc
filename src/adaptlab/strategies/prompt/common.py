"""What every prompt strategy shares: the prompt options (`PromptConfig`), demonstration options
(`DemoConfig`), and the fit that turns them into a `PromptAdapted`.

- ``zero_shot``: the instruction and the query only.
- ``few_shot``: ``k`` demonstrations chosen ``random`` (seeded), ``balanced`` (per class, round-robin so classes
  alternate) or ``knn`` (the most similar training examples by MiniLM embedding, *per query*: the prompt prefix
  is then not shared between queries, which the cost report states with ``prefix_shared: false``).
- ``calibrate``: contextual calibration (Zhao et al. 2021) as its own strategy name; ``few_shot`` with
  ``calibrate: true`` and ``k: 0`` by default. With kNN, ``p_cf`` is estimated per query with that query's own
  demonstrations.
- ``prompt_search``: candidate instructions/templates/demo sets scored on dev; the best is kept and the spread
  across candidates recorded.

``format: auto`` (the default) is resolved when the prompt is fitted: the chat template when the LM's tokenizer has
one, else plain (`adaptlab.strategies.prompt.format.resolve_style`); the artifact stores the resolved style and the
fit info records it as ``format_used``. Problems worth a look but not an error (balanced selection with fewer
demonstrations than classes) are logged and listed in the fit info's ``warnings``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from adaptlab.data.example import seeded_sample
from adaptlab.errors import ConfigError
from adaptlab.models.costs import forward_flops, peak_rss_bytes
from adaptlab.strategies.base import FitContext, LabelUse, StrategyConfig
from adaptlab.strategies.prompt.artifact import Calibration, KnnSpec, PromptAdapted
from adaptlab.strategies.prompt.calibration import CONTENT_FREE
from adaptlab.strategies.prompt.format import Demo, FormatChoice, PromptFormat, Style, resolve_style
from adaptlab.strategies.prompt.selection import (KnnIndex, balanced_shortfall, order_demos, select_balanced,
                                                  select_random)

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.lm.base import LM

log = logging.getLogger(__name__)


class PromptConfig(StrategyConfig):
    """Instruction + query; optional contextual calibration."""

    format: FormatChoice = "auto"
    """``plain`` text prompt, the model's ``chat`` template, or ``auto``: chat when the model's tokenizer has a chat
    template, else plain (resolved when fitted; the artifact keeps the resolved style)."""
    instruction: str | None = None
    """Instruction text; default: the task's instruction."""
    answer_prefix: str = "Answer:"
    """Text the answer follows, e.g. ``Answer:``, ``Sentiment:``."""
    input_prefix: str = ""
    """Text before each input, e.g. ``Review: ``."""
    instruction_role: Literal["system", "user"] = "system"
    """Chat: the instruction as system or user text."""
    chat_demos: Literal["turns", "inline"] = "turns"
    """Chat: demonstrations as user/assistant turns or inline in the user message."""
    score: Literal["sum", "mean"] = "sum"
    """Label score: summed log-likelihood, or per-token mean (length-normalised)."""
    calibrate: bool = False
    """Contextual calibration (Zhao et al. 2021) of the label probabilities."""
    content_free: list[str] = Field(default_factory=lambda: list(CONTENT_FREE))
    """Content-free inputs for calibration."""
    max_new_tokens: int = Field(64, ge=1)
    """Generation tasks: greedy decoding budget."""

    @model_validator(mode="after")
    def _check_calibration(self) -> PromptConfig:
        if self.calibrate and not self.content_free:
            raise ConfigError("calibration needs at least one content-free input", field="content_free")
        return self

    def label_use(self) -> LabelUse:
        return LabelUse("none")

    def style_for(self, lm: Any) -> Style:
        """The style ``format`` means for ``lm`` (``auto``: chat when its tokenizer has a chat template)."""
        return resolve_style(self.format, getattr(lm, "tokenizer", None))

    def prompt_format(self, task: Task, style: Style | None = None) -> PromptFormat:
        """The prompt layout for ``task`` in ``style`` (default: ``format``, with ``auto`` as for a model without
        a chat template, i.e. plain; fits pass `style_for` of their LM)."""
        instruction = task.instruction if self.instruction is None else self.instruction
        style = style or resolve_style(self.format, None)
        return PromptFormat(instruction=instruction, style=style, answer_prefix=self.answer_prefix,
                            input_prefix=self.input_prefix, instruction_role=self.instruction_role,
                            chat_demos=self.chat_demos)

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> PromptAdapted:
        return fit_prompt(self, task, train, ctx)

    def demonstrations(self, task: Task, train: Sequence[Example], ctx: FitContext,
                       meter: FitMeter) -> tuple[list[Demo], KnnSpec | None, KnnIndex | None]:
        """(static demonstrations, per-query kNN spec, its index): none without demonstrations."""
        return [], None, None


class DemoConfig(PromptConfig):
    """``k`` demonstrations before the query."""

    k: int = Field(8, ge=0)
    """Number of demonstrations."""
    selection: Literal["random", "balanced", "knn"] = "random"
    """``random`` (seeded), ``balanced`` (per class, classes alternate), ``knn`` (most similar, per query)."""
    order: Literal["as_selected", "random", "by_label", "similar_last"] | None = None
    """Demonstration order; default ``as_selected`` (random/balanced), ``similar_last`` (knn: the most similar
    right before the query)."""
    embedder: str = "minilm-l6"
    """knn: sentence embedder name."""
    pool_size: int | None = None
    """knn: cap the demonstration pool (seeded sample); default all."""

    @model_validator(mode="after")
    def _check_demos(self) -> DemoConfig:
        if self.order == "similar_last" and self.selection != "knn":
            raise ConfigError("order 'similar_last' needs selection 'knn'", field="order")
        if self.pool_size is not None and self.pool_size < max(self.k, 1):
            raise ConfigError("must be >= k", field="pool_size")
        return self

    @property
    def resolved_order(self) -> str:
        return self.order or ("similar_last" if self.selection == "knn" else "as_selected")

    def label_use(self) -> LabelUse:
        """No demonstrations: none; kNN: a pool of each training size; else the first ``k`` (one cell at n = k)."""
        if self.k == 0:
            return LabelUse("none")
        return LabelUse("train_sizes", self.k) if self.selection == "knn" else LabelUse("first_k", self.k)

    def demonstrations(self, task: Task, train: Sequence[Example], ctx: FitContext,
                       meter: FitMeter) -> tuple[list[Demo], KnnSpec | None, KnnIndex | None]:
        if self.k == 0:
            return [], None, None
        pool = demo_pool(task, train)
        if self.selection != "knn":
            meter.warn(balanced_warning(self, task))
            return select_demos(self, task, pool, ctx.seed), None, None
        pool = seeded_sample(pool, self.pool_size, ctx.seed)
        t0 = time.perf_counter()
        index = KnnIndex.build(pool, ctx.embedder(self.embedder))
        meter.extra["embed_seconds"] = time.perf_counter() - t0
        meter.extra["knn_pool"] = len(pool)
        knn = KnnSpec(pool=pool, embedder=self.embedder, k=self.k, order=self.resolved_order, seed=ctx.seed)
        return [], knn, index


# -- fitting --------------------------------------------------------------------------------------------
def demo_pool(task: Task, examples: Sequence[Example]) -> list[Demo]:
    """Training examples as demonstrations (rendered input + label key or target text)."""
    out_of = task.label_of if task.type == "classification" else task.target_of
    return [Demo(id=ex.id, input=task.render_input(ex), output=out_of(ex)) for ex in examples]


def new_adapted(task: Task, model_name: str, fmt: PromptFormat, cfg: PromptConfig,
                demos: Sequence[Demo] = (), knn: KnnSpec | None = None) -> PromptAdapted:
    """A `PromptAdapted` for ``task`` before calibration (not yet bound to an LM)."""
    if cfg.calibrate and task.type != "classification":
        raise ConfigError("calibration applies to classification tasks only", field="calibrate")
    return PromptAdapted(
        model_name=model_name, task_name=task.name, task_type=task.type,
        labels=list(zip(task.label_keys, task.verbalizers)), input_template=task.input,
        fmt=fmt, score=cfg.score, demos=list(demos), knn=knn,
        calibration=Calibration(mode="none", content_free=tuple(cfg.content_free)),
        max_new_tokens=cfg.max_new_tokens, strategy=cfg.strategy_name or "zero_shot", config=cfg.to_dict())


def apply_calibration(adapted: PromptAdapted) -> None:
    """Turn on calibration: per query for kNN prompts, else estimate the static ``p_cf`` now."""
    if adapted.knn is not None:
        adapted.calibration.mode = "per_query"
    else:
        adapted.calibration.mode = "static"
        adapted.calibration.p_cf = [float(x) for x in adapted.estimate_prior()]


def fit_prompt(cfg: PromptConfig, task: Task, train: Sequence[Example], ctx: FitContext) -> PromptAdapted:
    """Fit zero-shot / few-shot / calibrate: pick demonstrations, estimate calibration."""
    lm = ctx.lm()
    with FitMeter(lm) as meter:
        style = meter.extra["format_used"] = cfg.style_for(lm)
        demos, knn, index = cfg.demonstrations(task, train, ctx, meter)
        adapted = new_adapted(task, lm.name, cfg.prompt_format(task, style), cfg, demos, knn).bind(lm)
        if index is not None:
            adapted.set_index(index, ctx.embedder(knn.embedder))  # type: ignore[union-attr]
        if cfg.calibrate:
            apply_calibration(adapted)
        if adapted.knn is None:
            meter.extra["prefix_tokens"] = lm.count_tokens(adapted.context("", adapted.demos,
                                                                            getattr(lm, "tokenizer", None)))
    adapted.fit_info = meter.info()
    return adapted


def balanced_warning(cfg: DemoConfig, task: Task) -> str | None:
    """The warning for ``balanced`` selection of fewer demonstrations than the task has classes (some classes are
    never shown; the selection itself is unchanged), or None."""
    if cfg.selection != "balanced" or task.type != "classification":
        return None
    return balanced_shortfall(cfg.k, len(task.label_keys))


def select_demos(cfg: DemoConfig, task: Task, pool: Sequence[Demo], seed: int) -> list[Demo]:
    """Static (random/balanced) selection + ordering, seeded by ``seed``."""
    labels = task.label_keys if task.type == "classification" else None
    if cfg.selection == "balanced":
        if task.type != "classification":
            raise ConfigError("balanced selection needs a classification task", field="selection")
        chosen = select_balanced(pool, cfg.k, seed=seed, labels=labels)
    else:
        chosen = select_random(pool, cfg.k, seed=seed)
    return order_demos(chosen, cfg.resolved_order, seed=seed + 1, labels=labels)


class FitMeter:
    """Measures a fit: wall seconds, LM tokens computed (-> FLOPs), process peak memory."""

    def __init__(self, lm: LM) -> None:
        self.lm = lm
        self.extra: dict[str, Any] = {}
        self.warnings: list[str] = []

    def warn(self, message: str | None) -> None:
        """Log ``message`` and list it in the fit info's ``warnings`` (nothing for None or a repeat)."""
        if message and message not in self.warnings:
            log.warning("%s", message)
            self.warnings.append(message)

    def __enter__(self) -> FitMeter:
        u = self.lm.usage
        self._t0 = time.perf_counter()
        self._computed0, self._prompt0, self._req0 = u.computed_tokens, u.prompt_tokens, u.requests
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0

    def info(self) -> dict[str, Any]:
        u = self.lm.usage
        computed = u.computed_tokens - self._computed0
        n_params = self.lm.n_params
        return {"seconds": self.seconds, "computed_tokens": computed,
                "prompt_tokens": u.prompt_tokens - self._prompt0,
                "lm_requests": u.requests - self._req0,
                "flops": forward_flops(n_params, computed) if n_params else None,
                "peak_memory_bytes": peak_rss_bytes(), **self.extra,
                **({"warnings": list(self.warnings)} if self.warnings else {})}
