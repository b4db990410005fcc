"""``many_shot``: as many demonstrations from the cell's training labels as fit in a share of the model's context
window (many-shot in-context learning: Agarwal et al. 2024; Bertsch et al. 2024), so the prompt arm reads the
same labels a fine-tune gets.

The cell's training examples are ordered by the selection (``balanced``: classes take turns; ``random``: a
seeded shuffle, both seeded by the cell's seed as in ``few_shot``), capped at ``max_k``, and the longest prefix
of that order whose rendered prompt prefix (instruction + demonstrations, ``context("", demos)``) takes at most
``context_share`` x the LM's ``max_length`` tokens is kept (2,048 when the LM does not say). The result is an
ordinary static-demonstration `PromptAdapted`: the shared-prefix cache encodes the demonstrations once per
scoring call. ``calibrate: true`` calibrates it as ``few_shot`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from adaptlab.errors import ConfigError
from adaptlab.strategies.base import FitContext, LabelUse, strategy
from adaptlab.strategies.prompt.artifact import PROMPT_ARTIFACT, KnnSpec
from adaptlab.strategies.prompt.common import FitMeter, PromptConfig, demo_pool, new_adapted
from adaptlab.strategies.prompt.format import Demo
from adaptlab.strategies.prompt.selection import (KnnIndex, balanced_shortfall, order_demos, select_balanced,
                                                  select_random)

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 2048
"""The context window assumed for an LM that does not state its ``max_length``."""


@strategy("many_shot", family="prompt", artifact=PROMPT_ARTIFACT)
class ManyShotConfig(PromptConfig):
    """As many demonstrations as fit in a share of the context window (many-shot in-context learning)."""

    context_share: float = Field(0.5, gt=0.0, le=1.0)
    """Share of the model's context window (``max_length``; 2,048 when unknown) the instruction and the
    demonstrations may take; the rest is left for the query and its answer."""
    selection: Literal["balanced", "random"] = "balanced"
    """``balanced`` (classes alternate, each shown as evenly as possible) or ``random`` (seeded shuffle)."""
    max_k: int | None = Field(None, ge=1)
    """Cap on the number of demonstrations; default: as many as fit."""
    order: Literal["as_selected", "random", "by_label"] = "as_selected"
    """Order of the demonstrations that fit: as selected, a seeded shuffle, or grouped by class."""

    def label_use(self) -> LabelUse:
        """A pool of each training size (the demonstrations that fit are drawn from all of it)."""
        return LabelUse("train_sizes", 1)

    def demonstrations(self, task: Task, train: Sequence[Example], ctx: FitContext,
                       meter: FitMeter) -> tuple[list[Demo], KnnSpec | None, KnnIndex | None]:
        lm = ctx.lm()
        budget = context_budget(lm.max_length, self.context_share)
        candidates = selection_order(self, task, demo_pool(task, train), ctx.seed)
        labels = task.label_keys if task.type == "classification" else None
        probe = new_adapted(task, lm.name, self.prompt_format(task, self.style_for(lm)), self)
        tokenizer = getattr(lm, "tokenizer", None)

        def arranged(k: int) -> list[Demo]:
            return order_demos(candidates[:k], self.order, seed=ctx.seed + 1, labels=labels)

        def tokens(k: int) -> int:
            return lm.count_tokens(probe.context("", arranged(k), tokenizer))

        k = largest_fitting(lambda n: tokens(n) <= budget, len(candidates))
        if k == 0:
            log.warning("many_shot: no demonstration fits in %d prompt tokens (the instruction alone takes %d); "
                        "raise context_share", budget, tokens(0))
        # balanced selection reads every label of the pool to alternate the classes; random reads only those shown
        read = len(train) if self.selection == "balanced" and k > 0 else k
        meter.extra.update(k_used=k, pool=len(train), budget_tokens=budget, prefix_tokens=tokens(k),
                           labels_read=read)
        if self.selection == "balanced":
            meter.warn(balanced_shortfall(k, len(task.label_keys)))
        return arranged(k), None, None


def context_budget(max_length: int | None, share: float) -> int:
    """Tokens the instruction + demonstrations may take: ``share`` of the context window."""
    return int(share * (max_length or DEFAULT_CONTEXT))


def selection_order(cfg: ManyShotConfig, task: Task, pool: Sequence[Demo], seed: int) -> list[Demo]:
    """Every training demonstration in the order they are added (``balanced`` or ``random``), capped at
    ``max_k``."""
    n = len(pool) if cfg.max_k is None else min(cfg.max_k, len(pool))
    if cfg.selection == "balanced":
        if task.type != "classification":
            raise ConfigError("balanced selection needs a classification task", field="selection",
                              hint="use selection: random")
        return select_balanced(pool, n, seed=seed, labels=task.label_keys)
    return select_random(pool, n, seed=seed)


def largest_fitting(fits: Callable[[int], bool], n: int) -> int:
    """The largest ``k`` in ``0..n`` with ``fits(k)`` and not ``fits(k + 1)`` (binary search; ``fits`` grows
    false as ``k`` grows, as a prompt's token count does); 0 when nothing fits."""
    if n == 0 or not fits(1):
        return 0
    if fits(n):
        return n
    lo, hi = 1, n  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
