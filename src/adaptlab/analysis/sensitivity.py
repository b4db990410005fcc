"""Prompt sensitivity: the spread of a prompt's score across formats (FormatSpread, Sclar et al. 2024: instruction
wording, answer prefix, chat vs plain, demonstration order) and across seeds (demonstration sets)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from adaptlab.analysis.curves import groups, mean, ok_cells, std
from adaptlab.analysis.records import Sensitivity
from adaptlab.results import CellRecord, Family

TEMPLATE_OPTIONS = ("format", "instruction", "answer_prefix", "input_prefix", "instruction_role",
                    "chat_demos", "order", "score")
"""Prompt options that change only the format (wording, layout, demonstration order, answer scoring), not which
examples the model is shown."""


def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def sensitivity(cells: Iterable[CellRecord], *, family: Family = "prompt") -> list[Sensitivity]:
    """Spread across formats (variants of a strategy at one n_train differing only in
    `TEMPLATE_OPTIONS`; values are per-format means over seeds) and across seeds (one variant
    at one n_train; values per seed). Only groups with two or more values."""
    ok = [c for c in ok_cells(cells) if c.family == family]
    out: list[Sensitivity] = []
    by_strategy: dict[str, list[CellRecord]] = defaultdict(list)
    for c in ok:
        by_strategy[c.strategy].append(c)
    for strategy, group in sorted(by_strategy.items()):
        keys = {k for c in group for k in c.options if k not in TEMPLATE_OPTIONS}
        varying = sorted(k for k in keys if len({_frozen(c.options.get(k)) for c in group}) > 1)
        setups: dict[tuple[int, str], dict[str, list[CellRecord]]] = {}
        for c in group:
            rest = _frozen({k: c.options.get(k) for k in keys})
            setups.setdefault((c.n_train, rest), defaultdict(list))[c.variant].append(c)
        for (n, _), variants in sorted(setups.items()):
            if len(variants) < 2:
                continue
            opts = variants[next(iter(variants))][0].options
            label = " ".join([strategy, *(f"{k}={opts.get(k)}" for k in varying)])
            names = sorted(variants)
            vals = [mean(c.value for c in variants[v]) for v in names]
            out.append(Sensitivity(label, "formats", vals, std(vals), max(vals) - min(vals), n,
                                   names))
    for (variant, n), group in sorted(groups(ok).items()):
        vals = [c.value for c in group]
        if len(vals) >= 2:
            out.append(Sensitivity(variant, "seeds", vals, std(vals), max(vals) - min(vals), n, [variant]))
    return out
