"""Break-even query volumes and cumulative costs of the best prompt and the best fine-tune, and the cost
assumptions behind them in words.

One-off costs are the fit's compute (``train_*``) and, in dollars, the labels the variant used (labels used x
``Scenario.price_per_label``): both are paid once per training (a task change re-pays both: new labels for a
fine-tune and for a prompt's demonstrations alike).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adaptlab.analysis.curves import mean
from adaptlab.analysis.records import Best, BreakEven
from adaptlab.results import CellRecord, Scenario


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
    """Unit -> (mean one-off cost, mean cost per query) over the Best's cells; "labels" is the label $."""
    return {"flops": (best.average("train_flops"), best.average("query_flops")),
            "seconds": (best.average("train_seconds"), best.average("query_seconds")),
            "dollars": (mean(c.train_cost(scenario) for c in best.cells),
                        mean(c.query_cost(scenario) for c in best.cells)),
            "labels": (mean(c.label_cost(scenario) for c in best.cells), 0.0)}


def break_even(prompt: Best, finetune: Best, scenario: Scenario) -> BreakEven:
    """Break-even volumes in FLOPs, measured seconds and $ (means over each Best's cells); the $ one counts
    each side's label cost as a one-off (``queries_dollars_no_labels`` does not)."""
    p, f = _costs(prompt, scenario), _costs(finetune, scenario)
    kw: dict[str, Any] = {}
    for unit in ("flops", "seconds", "dollars"):
        kw[f"train_{unit}"], kw[f"finetune_query_{unit}"] = f[unit]
        kw[f"prompt_train_{unit}"], kw[f"prompt_query_{unit}"] = p[unit]
        kw[f"queries_{unit}"] = queries_to_break_even(p[unit][0], f[unit][0], p[unit][1], f[unit][1])
    kw["queries_dollars_no_labels"] = kw["queries_dollars"]
    kw["label_dollars"], kw["prompt_label_dollars"] = f["labels"][0], p["labels"][0]
    kw["queries_dollars"] = queries_to_break_even(p["dollars"][0] + p["labels"][0], f["dollars"][0] + f["labels"][0],
                                                  p["dollars"][1], f["dollars"][1])
    return BreakEven(prompt=prompt.variant, finetune=finetune.variant, **kw)


def cumulative_cost_curve(best: Best, scenario: Scenario, volumes: Iterable[float]) -> list[float]:
    """$ spent after each query volume: mean one-off cost (training and labels) + volume x mean $ per query."""
    costs = _costs(best, scenario)
    (train, query), labels = costs["dollars"], costs["labels"][0]
    return [train + labels + float(v) * query for v in volumes]


# -- The assumptions, in words -----------------------------------------------------------------

def usd(x: float) -> str:
    """A price: $3.60, $0.50, $0.0025."""
    return f"${x:,.2f}" if abs(x) >= 0.01 or x == 0 else f"${x:.3g}"


def _api_prices(cells: Iterable[CellRecord], scenario: Scenario) -> list[str]:
    """One sentence per distinct API token price the cells are priced at."""
    seen: dict[tuple[float, float, str], list[str]] = {}
    for c in cells:
        price = c.token_price(scenario)
        if price is None:
            continue
        stored = c.query_info().get("token_price") or {}
        source = ("the scenario's token_price" if scenario.token_price is not None
                  else str(stored.get("source") or "not recorded"))
        variants = seen.setdefault((price.input_per_mtok, price.output_per_mtok, source), [])
        if c.variant not in variants:
            variants.append(c.variant)
    return [f"API-priced ({', '.join(v)}): ${i:g} per 1M input and ${o:g} per 1M output tokens, as the API "
            f"reported them (price source: {src})." for (i, o, src), v in seen.items()]


def _serving(cells: list[CellRecord], scenario: Scenario) -> str:
    if scenario.serving == "single":
        return "Serving: one request at a time (the median single-query latency is what a query costs)."
    sizes = sorted({int(b) for c in cells if isinstance(b := c.query_info().get("throughput_batch_size"), (int, float))
                    and not isinstance(b, bool)})
    measured = sum(1 for c in cells if c.query_info().get("throughput_qps"))
    if not measured:
        return ("Serving: batched, at the seconds per query of the evaluation's batched run (no throughput "
                "measured at a best batch size).")
    at = f" (the best sizes found: {', '.join(map(str, sizes))})" if sizes else ""
    rest = "" if measured == len(cells) else f"; {len(cells) - measured} cells without it at their batched seconds"
    return f"Serving: batched, at the throughput each cell measured at its best batch size{at}{rest}."


def cost_assumptions(cells: Iterable[CellRecord], scenario: Scenario) -> list[str]:
    """The cost assumptions behind every $ figure, one sentence each: hardware prices, serving mode, prefix
    cache, price per label, horizon and volume, task changes, and each API token price with its source."""
    cells = list(cells)
    sc = scenario
    train = ("" if sc.train_price_per_hour is None
             else f"; training at {usd(sc.train_price_per_hour)} per hour")
    out = [f"Hardware at {usd(sc.price_per_hour)} per hour{train or ' (training too)'}.", _serving(cells, sc),
           ("Prefix cache on: a prompt's shared prefix is computed once (warm latency and FLOPs where measured)."
            if sc.prefix_cache else "Prefix cache off: every query's prompt is computed in full."),
           (f"Labels at {usd(sc.price_per_label)} each (training and dev labels a variant read), paid once per "
            "training." if sc.price_per_label > 0 else "Labels priced at $0 (set price_per_label to count them)."),
           f"{sc.months:g} months at {sc.queries_per_month:,.0f} queries a month.",
           f"{sc.task_changes_per_year:g} task changes a year (each re-pays training and labels)."]
    return out + _api_prices(cells, sc)
