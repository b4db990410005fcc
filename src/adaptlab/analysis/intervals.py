"""The interval shown for each variant at one training size, labelled with exactly what it is.

* Per-example scores available and a metric that is their mean (accuracy, exact match, ROUGE-L):
  `stats.hierarchical_interval` (2+ seeds: `HIERARCHICAL`; one seed it is a bootstrap over test examples,
  `ONE_SEED`).
* Otherwise (no predictions, or macro-F1, BLEU, chrF): the seed range (min-max of the seeds' values,
  `SEED_RANGE`: the test sample's own noise is not in it), or for one seed that cell's 95% bootstrap interval
  over test examples (`ONE_SEED`).

An average of per-seed bounds is never shown as an interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from adaptlab.analysis.curves import groups, mean
from adaptlab.analysis.records import Interval
from adaptlab.analysis.significance import seed_scores
from adaptlab.analysis.stats import hierarchical_interval
from adaptlab.errors import ConfigError
from adaptlab.metrics import get_metric
from adaptlab.results import CellRecord, PredictionRow

log = logging.getLogger(__name__)

HIERARCHICAL = "95% hierarchical bootstrap over seeds and test examples"
ONE_SEED = "95% bootstrap over test examples, one seed"
SEED_RANGE = "seed range"
NONE = "no interval (one seed, not bootstrapped)"
N_RESAMPLES = 2000


def _is_mean(metric: str) -> bool:
    try:
        return get_metric(metric).is_mean
    except ConfigError:
        return True  # an unknown metric: its value is taken to be the mean of the per-example scores


def interval_of(group: Sequence[CellRecord], predictions: Callable[[str], list[PredictionRow]] | None = None, *,
                n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """The interval of one (variant, n_train) group of cells (one per seed); module doc for which."""
    first, values = group[0], [c.value for c in group]
    k = len(group)
    if predictions is not None and _is_mean(first.metric):
        try:
            h = hierarchical_interval(seed_scores(group, predictions), n_resamples=n_resamples, seed=seed)
            return Interval(first.variant, first.n_train, h.mean, h.low, h.high,
                            HIERARCHICAL if k > 1 else ONE_SEED, k, h.n)
        except ValueError as e:  # no rows, no shared ids, a non-finite score
            log.debug("no bootstrap interval for %s at n=%d: %s", first.variant, first.n_train, e)
    if k > 1:
        return Interval(first.variant, first.n_train, mean(values), min(values), max(values), SEED_RANGE, k)
    if math.isfinite(first.ci_low) and math.isfinite(first.ci_high):
        return Interval(first.variant, first.n_train, first.value, first.ci_low, first.ci_high, ONE_SEED, 1,
                        first.n_test)
    return Interval(first.variant, first.n_train, first.value, first.value, first.value, NONE, 1)


def variant_intervals(cells: Sequence[CellRecord],
                      predictions: Callable[[str], list[PredictionRow]] | None = None) -> list[Interval]:
    """`interval_of` every (variant, n_train) of the ok ``cells``, sorted by variant then size."""
    return [interval_of(g, predictions) for _, g in sorted(groups(cells).items())]
