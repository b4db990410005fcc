"""Break-even query volumes and cumulative costs of the best prompt and the best fine-tune."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adaptlab.analysis.curves import mean
from adaptlab.analysis.records import Best, BreakEven
from adaptlab.results import Scenario


def queries_to_break_even(train_prompt: float, train_ft: float, query_prompt: float,
                          query_ft: float) -> float | None:
    """(train_ft - train_prompt) / (query_prompt - query_ft) if the fine-tune is cheaper per query
    (0 if also no dearer to train: cheaper from the start); None if it is dearer per query."""
    if query_prompt > query_ft:
        return max(0.0, (train_ft - train_prompt) / (query_prompt - query_ft))
    if query_prompt == query_ft and train_ft <= train_prompt:
        return 0.0
    return None


def _costs(best: Best, scenario: Scenario) -> dict[str, tuple[float, float]]:
    """Unit -> (mean one-off cost, mean cost per query) over the Best's cells."""
    return {"flops": (best.average("train_flops"), best.average("query_flops")),
            "seconds": (best.average("train_seconds"), best.average("query_seconds")),
            "dollars": (mean(c.train_cost(scenario) for c in best.cells),
                        mean(c.query_cost(scenario) for c in best.cells))}


def break_even(prompt: Best, finetune: Best, scenario: Scenario) -> BreakEven:
    """Break-even volumes in FLOPs, measured seconds and $ (means over each Best's cells)."""
    p, f = _costs(prompt, scenario), _costs(finetune, scenario)
    kw: dict[str, Any] = {}
    for unit in ("flops", "seconds", "dollars"):
        kw[f"train_{unit}"], kw[f"finetune_query_{unit}"] = f[unit]
        kw[f"prompt_train_{unit}"], kw[f"prompt_query_{unit}"] = p[unit]
        kw[f"queries_{unit}"] = queries_to_break_even(p[unit][0], f[unit][0], p[unit][1], f[unit][1])
    return BreakEven(prompt=prompt.variant, finetune=finetune.variant, **kw)


def cumulative_cost_curve(best: Best, scenario: Scenario, volumes: Iterable[float]) -> list[float]:
    """$ spent after each query volume: mean one-off cost + volume x mean $ per query."""
    train, query = _costs(best, scenario)["dollars"]
    return [train + float(v) * query for v in volumes]
