"""What a compare run's cells say: learning curves, the best of each family, what a prompt is worth
in labelled examples, the break-even query volume, paired significance and prompt sensitivity.

Pure functions of `adaptlab.results` records (failed cells are ignored everywhere; `Analysis`
lists them). Choices, so the report can state them:

* Spread over seeds: ``std`` is the sample standard deviation (ddof=1; 0 for one seed);
  ``low``/``high`` are the min/max over seeds.
* Prompt strategies are curves too: their cells' ``n_train`` is k (0 for zero-shot), so a
  ``few_shot k=8`` variant is one point at n=8; kNN and prompt search have a point per pool size.
* `prompt_worth` (after Le Scao & Rush 2021): the first n at which a fine-tune's mean reaches the
  best prompt's mean, interpolated linearly in log n between the last point below and the first
  at/above (linearly in n when the point below is n=0, which log n cannot place). ``n_low`` is the
  same crossing of the max-over-seeds curve (the optimistic case), ``n_high`` of the min-over-seeds
  curve (pessimistic); the target is the best prompt's mean, taken as exact.
* Significance: per-example scores averaged over each side's seeds, paired by example id
  (examples shared by every cell of both), then a paired bootstrap over examples — for metrics
  that are a mean of per-example scores. Otherwise (macro-F1, BLEU, chrF) one cell per side, the
  seed whose value is nearest its mean (ties: lowest seed), with a paired corpus bootstrap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from adaptlab.analysis.costs import break_even, cumulative_cost_curve, queries_to_break_even
from adaptlab.analysis.curves import best_of, crossing, learning_curves, ok_cells, prompt_worth
from adaptlab.analysis.records import (Analysis, Best, BreakEven, Crossover, Curve, CurvePoint, Sensitivity,
                                       Significance)
from adaptlab.analysis.sensitivity import TEMPLATE_OPTIONS, sensitivity
from adaptlab.analysis.significance import compare_best, paired_significance, representative
from adaptlab.results import CellRecord, PredictionRow, Scenario

log = logging.getLogger(__name__)

__all__ = ["TEMPLATE_OPTIONS", "Analysis", "Best", "BreakEven", "Crossover", "Curve", "CurvePoint", "Sensitivity",
           "Significance", "analyze", "best_of", "break_even", "compare_best", "crossing", "cumulative_cost_curve",
           "learning_curves", "paired_significance", "prompt_worth", "queries_to_break_even", "representative",
           "sensitivity"]


def analyze(cells: Iterable[CellRecord], predictions: Callable[[str], list[PredictionRow]],
            scenario: Scenario) -> Analysis:
    """All of the above on the ok cells, their per-query costs as the scenario serves them
    (`CellRecord.served`). The bests respect ``scenario.labels_available``;
    significance is `compare_best` (fine-tune - prompt), None with a note if it cannot run."""
    cells = [c.served(scenario) for c in cells]
    ok = ok_cells(cells)
    failed = [{"key": c.key, "variant": c.variant, "strategy": c.strategy, "n_train": c.n_train,
               "seed": c.seed, "error": c.error or "no metric value"} for c in cells if not c.ok]
    metrics = sorted({c.metric for c in ok})
    notes = [f"cells report different metrics: {', '.join(metrics)}"] if len(metrics) > 1 else []
    limit = scenario.labels_available
    best_p = best_of(ok, "prompt", max_labels=limit)
    best_f = best_of(ok, "finetune", max_labels=limit)
    within = f" with <= {limit} labels" if limit is not None else ""
    notes += [f"no successful {what} cell{within}" for what, best in
              (("prompt", best_p), ("fine-tuning", best_f)) if best is None]
    even = break_even(best_p, best_f, scenario) if best_p and best_f else None
    sig = None
    if best_p and best_f:
        try:
            sig = compare_best(best_f, best_p, predictions)
        except (ValueError, KeyError, OSError) as e:
            log.warning("no significance test: %s", e)
            notes.append(f"no significance test: {e}")
    return Analysis(curves=learning_curves(ok), best_prompt=best_p, best_finetune=best_f,
                    crossovers=prompt_worth(ok, best_p) if best_p else [], break_even=even,
                    significance=sig,
                    sensitivity=sensitivity(ok), scenario=scenario,
                    metric=metrics[0] if metrics else "", failed=failed, notes=notes, cells=ok)
