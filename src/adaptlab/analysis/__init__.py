"""What a compare run's cells say: learning curves, the best of each family, what a prompt is worth
in labelled examples, the break-even query volume, paired significance, prompt sensitivity, each variant's
interval, the majority baseline and the cost assumptions.

Pure functions of `adaptlab.results` records (failed cells are ignored everywhere; `Analysis`
lists them). Choices, so the report can state them:

* Spread over seeds: ``std`` is the sample standard deviation (ddof=1; 0 for one seed);
  ``low``/``high`` are the min/max over seeds.
* Labels: curves are keyed by training size (``n_train``, the grid's sizes) and carry the labels used
  (`CellRecord.labels`: training + dev labels read, mean over seeds); label limits (``labels_available``,
  `best_of` ``max_labels``) compare against labels used.
* Prompt strategies are curves too: their cells' ``n_train`` is k (0 for zero-shot), so a
  ``few_shot k=8`` variant is one point at n=8; kNN and prompt search have a point per pool size.
* `prompt_worth` (after Le Scao & Rush 2021): the n from which a fine-tune's mean stays at or above the
  best prompt's mean, interpolated linearly in log n between the last point below and the next
  (linearly in n when the point below is n=0, which log n cannot place), in training labels (``n``) and
  labels used (``labels``). A curve above early and below later has no crossing there ("no stable
  crossing" when it ends below). ``*_low`` is the same crossing of the max-over-seeds curve (the
  optimistic case), ``*_high`` of the min-over-seeds curve (pessimistic); the target is taken as exact.
* Significance (`compare_best`): a hierarchical paired bootstrap (`stats.hierarchical_paired_bootstrap`:
  each side's seeds and the shared test examples resampled) for metrics that are a mean of per-example
  scores. Otherwise (macro-F1, BLEU, chrF) one cell per side, the seed whose value is nearest its mean
  (ties: lowest seed), with a paired corpus bootstrap; seeds are not resampled and the method says so.
* Intervals (`intervals`): each variant's, labelled with what it is (`adaptlab.analysis.intervals`).
* Baseline (`baseline`): the majority-class baseline and the variants no better (`adaptlab.analysis.baseline`).
* Costs: `break_even` in FLOPs, seconds and $ (labels x price per label a one-off, paid per training);
  `cost_assumptions` says what the $ figures assume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from adaptlab.analysis.baseline import majority_baseline
from adaptlab.analysis.costs import break_even, cost_assumptions, cumulative_cost_curve, queries_to_break_even
from adaptlab.analysis.curves import best_of, crossing, learning_curves, ok_cells, prompt_worth
from adaptlab.analysis.intervals import interval_of, variant_intervals
from adaptlab.analysis.records import (Analysis, Baseline, Best, BreakEven, Crossover, Curve, CurvePoint, Flag,
                                       Interval, Sensitivity, Significance)
from adaptlab.analysis.sensitivity import TEMPLATE_OPTIONS, sensitivity
from adaptlab.analysis.significance import compare_best, paired_significance, representative
from adaptlab.results import CellRecord, PredictionRow, Scenario

log = logging.getLogger(__name__)

__all__ = ["TEMPLATE_OPTIONS", "Analysis", "Baseline", "Best", "BreakEven", "Crossover", "Curve", "CurvePoint", "Flag",
           "Interval", "Sensitivity", "Significance", "analyze", "best_of", "break_even", "compare_best",
           "cost_assumptions", "crossing", "cumulative_cost_curve", "interval_of", "learning_curves",
           "majority_baseline", "paired_significance", "prompt_worth", "queries_to_break_even", "read_rows",
           "representative", "sensitivity", "variant_intervals"]


def read_rows(cells: Iterable[CellRecord], predictions: Callable[[str], list[PredictionRow]]
              ) -> tuple[dict[str, list[PredictionRow]], list[str]]:
    """Each cell's prediction rows (a cell whose rows cannot be read has none), and a note if any could not."""
    rows, missing = {}, []
    for c in cells:
        try:
            rows[c.key] = list(predictions(c.key))
        except (KeyError, OSError, ValueError) as e:
            log.debug("no predictions for cell %s: %s", c.key[:12], e)
            rows[c.key], _ = [], missing.append(c.key[:12])
    return rows, ([f"no predictions could be read for {len(missing)} cell(s)"] if missing else [])


def analyze(cells: Iterable[CellRecord], predictions: Callable[[str], list[PredictionRow]],
            scenario: Scenario) -> Analysis:
    """All of the above on the ok cells, their per-query costs as the scenario serves them
    (`CellRecord.served`). The bests respect ``scenario.labels_available`` (in labels used);
    significance is `compare_best` (fine-tune - prompt), None with a note if it cannot run. Every ok cell's
    prediction rows are read once (kept in ``Analysis.rows`` for the recommendation)."""
    cells = [c.served(scenario) for c in cells]
    ok = ok_cells(cells)
    rows, read_notes = read_rows(ok, predictions)
    failed = [{"key": c.key, "variant": c.variant, "strategy": c.strategy, "n_train": c.n_train,
               "seed": c.seed, "error": c.error or "no metric value"} for c in cells if not c.ok]
    metrics = sorted({c.metric for c in ok})
    notes = [f"cells report different metrics: {', '.join(metrics)}"] if len(metrics) > 1 else []
    notes += read_notes
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
            sig = compare_best(best_f, best_p, lambda key: rows.get(key, []))
        except (ValueError, KeyError, OSError) as e:
            log.warning("no significance test: %s", e)
            notes.append(f"no significance test: {e}")
    metric = metrics[0] if metrics else ""
    baseline, base_notes = majority_baseline(ok, lambda key: rows.get(key, []), metric) if ok else (None, [])
    return Analysis(curves=learning_curves(ok), best_prompt=best_p, best_finetune=best_f,
                    crossovers=prompt_worth(ok, best_p) if best_p else [], break_even=even,
                    significance=sig, sensitivity=sensitivity(ok), scenario=scenario, metric=metric, failed=failed,
                    notes=notes + base_notes, cells=ok, intervals=variant_intervals(ok, lambda key: rows.get(key, [])),
                    baseline=baseline, assumptions=cost_assumptions(ok, scenario), rows=rows)
