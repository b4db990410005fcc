"""``prompt_search``: score candidate prompts on dev, keep the best, record the spread.

Candidates are the product of instructions × answer prefixes × input prefixes (the built-in
``library.yaml`` phrasings plus the user's own, the config's own ``instruction``/``answer_prefix``/
``input_prefix`` first) × ``n_demo_sets`` demonstration sets (seeds ``seed``, ``seed+1``, ...).
When the product exceeds ``max_candidates`` the default candidate (first of everything) is kept and
the rest is a seeded sample. Every candidate is scored on the same dev sample (at most ``max_dev``
examples, seeded) with the task's metric; all candidates' scores and their min/max/mean/std are
recorded, because sensitivity to the prompt is a real cost of prompting. Ties go to the earlier
candidate (the default first).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from adaptlab.data.example import seeded_sample
from adaptlab.errors import ConfigError
from adaptlab.metrics import compute
from adaptlab.strategies.base import FitContext, LabelUse, strategy
from adaptlab.strategies.prompt.artifact import PROMPT_ARTIFACT, PromptAdapted
from adaptlab.strategies.prompt.common import (DemoConfig, FitMeter, apply_calibration, balanced_warning, demo_pool,
                                               new_adapted, select_demos)
from adaptlab.strategies.prompt.format import Demo, PromptFormat

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task

log = logging.getLogger(__name__)

GENERIC_LABEL_FIELDS = {"label", "labels", "class", "y", "target", "gold", "category"}


@strategy("prompt_search", family="prompt", artifact=PROMPT_ARTIFACT)
class PromptSearchConfig(DemoConfig):
    """Search instructions, templates and demonstration sets on dev; keep the best."""

    selection: Literal["random", "balanced"] = "balanced"  # type: ignore[assignment]
    """Demonstration sets: random or balanced (kNN prompts differ per query, not searched)."""
    instructions: list[str] = Field(default_factory=list)
    """Extra candidate instructions (added to the library's)."""
    answer_prefixes: list[str] = Field(default_factory=list)
    """Extra candidate answer prefixes, e.g. ``Sentiment:``."""
    input_prefixes: list[str] = Field(default_factory=list)
    """Extra candidate input prefixes, e.g. ``Review: ``."""
    use_library: bool = True
    """Include the built-in phrasings of library.yaml."""
    n_demo_sets: int = Field(3, ge=1)
    """Demonstration sets to try (seeds seed, seed+1, ...)."""
    max_dev: int = Field(200, ge=1)
    """Dev examples each candidate is scored on (seeded sample)."""
    max_candidates: int = Field(24, ge=1)
    """Cap on candidates (the default kept, the rest a seeded sample)."""

    def label_use(self) -> LabelUse:
        """The demonstration pool is each training size (sizes below ``k`` are skipped)."""
        return LabelUse("train_sizes", self.k)

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> PromptAdapted:
        return fit_search(self, task, train, dev, ctx)


@lru_cache(maxsize=1)
def library() -> dict[str, Any]:
    """The built-in phrasings (``prompting/library.yaml``)."""
    import yaml

    text = resources.files("adaptlab.strategies.prompt").joinpath("library.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _fill(template: str, task: Task) -> str | None:
    label_field = getattr(task, "label_field", None) or ""
    label_name = "" if label_field.lower() in GENERIC_LABEL_FIELDS else \
        label_field.replace("_", " ").strip().title()
    if "{label_name}" in template and not label_name:
        return None
    return (template.replace("{task_instruction}", task.instruction)
            .replace("{labels}", ", ".join(task.verbalizers)).replace("{label_name}", label_name))


def _unique(items: Sequence[str | None]) -> list[str]:
    out: list[str] = []
    for x in items:
        if x is not None and x not in out:
            out.append(x)
    return out


def candidate_templates(cfg: PromptSearchConfig, task: Task) -> tuple[list[str], list[str], list[str]]:
    """(instructions, answer prefixes, input prefixes), the config's own first, duplicates removed."""
    lib = library().get(task.type, {}) if cfg.use_library else {}
    own_instruction = task.instruction if cfg.instruction is None else cfg.instruction
    instr = _unique([own_instruction, *cfg.instructions,
                     *(_fill(t, task) for t in lib.get("instructions", []))])
    answer = _unique([cfg.answer_prefix, *cfg.answer_prefixes,
                      *(_fill(t, task) for t in lib.get("answer_prefixes", []))])
    inputs = _unique([cfg.input_prefix, *cfg.input_prefixes,
                      *(_fill(t, task) for t in lib.get("input_prefixes", []))])
    return instr, answer, inputs


def fit_search(cfg: PromptSearchConfig, task: Task, train: Sequence[Example], dev: Sequence[Example],
               ctx: FitContext) -> PromptAdapted:
    """Score every candidate on the dev sample; return the best as a `PromptAdapted`."""
    if not dev:
        raise ConfigError("prompt_search needs a non-empty dev split", field="max_dev")
    lm, seed = ctx.lm(), ctx.seed
    with FitMeter(lm) as meter:
        style = meter.extra["format_used"] = cfg.style_for(lm)  # format auto: every candidate in the LM's style
        dev_sample = seeded_sample(dev, cfg.max_dev, seed)
        refs = [task.label_of(ex) if task.type == "classification" else task.target_of(ex)
                for ex in dev_sample]
        instr, answer, inputs = candidate_templates(cfg, task)
        demo_sets: list[list[Demo]] = [[]]
        if cfg.k > 0:
            meter.warn(balanced_warning(cfg, task))
            pool = demo_pool(task, train)
            demo_sets = [select_demos(cfg, task, pool, seed + s) for s in range(cfg.n_demo_sets)]
            meter.extra["labels_read"] = len(pool)  # the demonstration sets are drawn from the whole pool
        combos = list(itertools.product(range(len(instr)), range(len(answer)), range(len(inputs)),
                                        range(len(demo_sets))))
        if len(combos) > cfg.max_candidates:
            rest = random.Random(seed).sample(combos[1:], cfg.max_candidates - 1)
            combos = [combos[0], *sorted(rest)]
        records: list[dict[str, Any]] = []
        best: tuple[float, PromptAdapted] | None = None
        t0 = time.perf_counter()
        for n, (i, a, p, d) in enumerate(combos):
            fmt = PromptFormat(instruction=instr[i], style=style, answer_prefix=answer[a],
                               input_prefix=inputs[p], instruction_role=cfg.instruction_role,
                               chat_demos=cfg.chat_demos)
            cand = new_adapted(task, lm.name, fmt, cfg, demo_sets[d]).bind(lm)
            if cfg.calibrate:
                apply_calibration(cand)
            preds = cand.predict(dev_sample)
            value = float(compute(task.metric, [x.pred for x in preds], refs))
            records.append({"index": n, "instruction": instr[i], "answer_prefix": answer[a],
                            "input_prefix": inputs[p], "demo_set": d,
                            "demo_ids": [x.id for x in demo_sets[d]], "dev_metric": value})
            log.info("candidate %d/%d: %s=%.4f", n + 1, len(combos), task.metric, value)
            if best is None or value > best[0]:
                best = (value, cand)
        assert best is not None
        values = np.array([r["dev_metric"] for r in records])
        chosen = best[1]
        search = {
            "metric": task.metric, "dev_n": len(dev_sample), "n_candidates": len(records),
            "n_possible": len(instr) * len(answer) * len(inputs) * len(demo_sets),
            "best_index": int(np.argmax(values)), "best": float(values.max()),
            "spread": {"min": float(values.min()), "max": float(values.max()),
                       "mean": float(values.mean()), "std": float(values.std(ddof=0)),
                       "range": float(values.max() - values.min())},
            "dev_queries_scored": len(records) * len(dev_sample),
            "seconds": time.perf_counter() - t0, "candidates": records,
        }
        if chosen.knn is None:
            prefix = chosen.context("", chosen.demos, getattr(lm, "tokenizer", None))
            meter.extra["prefix_tokens"] = lm.count_tokens(prefix)
    chosen.config = cfg.to_dict()
    chosen.fit_info = {**meter.info(), "search": search}
    return chosen
