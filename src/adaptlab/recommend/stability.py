"""How often a measured decision survives resampling its evidence (`decision_stability`).

Each of `N_REPLICATES` replicates draws one resample of the test examples every cell of both candidates shares
(the same indices for both: paired) and, per candidate, a resample of its seeds with replacement (as
`adaptlab.analysis.stats.hierarchical_paired_bootstrap`); both candidates' means are recomputed (centred on their
seed means) and the decision rule (`decide_rule`) is re-run under the scenario's costs, which are not resampled.
A replicate's quality gap counts as significant when its difference clears the margins of the observed test
(`Gap.replicate`). Without shared prediction rows, or for a metric that is not a mean of per-example scores
(macro-F1, BLEU, chrF), only the seeds are resampled (the cells' values). One seed each and no rows: not computed.

Below `STABLE` the recommendation calls the decision too close (`adaptlab.recommend.decide`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from adaptlab.analysis.stats import score_matrix, shared_ids
from adaptlab.errors import ConfigError
from adaptlab.metrics import get_metric
from adaptlab.recommend.options import Gap, Option, decide_rule
from adaptlab.results import Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis

log = logging.getLogger(__name__)

STABLE = 0.8
"""A decision that holds in fewer replicates than this share is too close to call."""
N_REPLICATES = 500
_MAX_CELLS = 2_000_000  # bound on replicates x examples held at once


@dataclass(frozen=True)
class Stability:
    """The share of ``replicates`` giving the same decision and choice, and what was resampled."""

    share: float
    replicates: int
    method: str

    @property
    def stable(self) -> bool:
        return self.share >= STABLE

    def sentence(self) -> str:
        return (f"The decision held in {self.share:.0%} of {self.replicates} bootstrap replicates ({self.method}"
                f"{'' if self.stable else f'; below {STABLE:.0%}: too close to call'}).")


def _weights(rng: np.random.Generator, m: int, s: int) -> np.ndarray:
    """(m, s): each seed's share in m resamples of s seeds with replacement."""
    draws = rng.integers(0, s, size=(m, s)) + (np.arange(m) * s)[:, None]
    return np.bincount(draws.ravel(), minlength=m * s).reshape(m, s) / s


def paired_replicates(a: np.ndarray, b: np.ndarray, n_resamples: int = N_REPLICATES, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Replicate means of two (seeds, examples) score matrices on the same examples: examples resampled once per
    replicate for both, seeds per side. A matrix with one column (the cells' values) resamples seeds only."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    rows = max(1, min(n_resamples, _MAX_CELLS // max(n, 1)))
    out: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    done = 0
    while done < n_resamples:
        m = min(rows, n_resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        for acc, mat in zip(out, (a, b)):
            per_example = _weights(rng, m, mat.shape[0]) @ mat
            acc.append(np.take_along_axis(per_example, idx, axis=1).mean(axis=1))
        done += m
    return np.concatenate(out[0]), np.concatenate(out[1])


def _matrices(analysis: Analysis, p: Option, f: Option) -> tuple[np.ndarray, np.ndarray, str]:
    """Both sides' (seeds, examples) scores on their shared examples, or their values (seeds, 1)."""
    try:
        mean_metric = get_metric(p.metric).is_mean
    except ConfigError:
        mean_metric = True
    if mean_metric and analysis.rows:
        sides = [[{str(r.example_id): r.score for r in analysis.predictions(c.key)} for c in o.best.cells]
                 for o in (p, f)]
        ids = shared_ids(*sides)
        if ids:
            mats = [score_matrix(s, ids) for s in sides]
            if all(np.all(np.isfinite(m)) for m in mats):
                return mats[0], mats[1], (f"{len(p.best.cells)} vs {len(f.best.cells)} seeds and {len(ids)} shared "
                                          "test examples resampled")
    vals = [np.array([[c.value] for c in o.best.cells], dtype=np.float64) for o in (p, f)]
    return vals[0], vals[1], f"{len(p.best.cells)} vs {len(f.best.cells)} seeds resampled; test examples not"


def decision_stability(analysis: Analysis, p: Option, f: Option, gap: Gap, sc: Scenario,
                       decided: tuple[str, str]) -> Stability | None:
    """The share of replicates in which `decide_rule` gives ``decided`` (decision, choice) again; None when
    nothing can be resampled (one seed each and no shared predictions)."""
    a, b, method = _matrices(analysis, p, f)
    if a.shape[1] == 1 and a.shape[0] == 1 and b.shape[0] == 1:
        return None
    reps_p, reps_f = paired_replicates(a, b)
    reps_p += p.mean - float(a.mean())  # centred on the options' own means (the cells' values)
    reps_f += f.mean - float(b.mean())
    same = 0
    for mp, mf in zip(reps_p.tolist(), reps_f.tolist()):
        d, o, _ = decide_rule(p.with_mean(mp), f.with_mean(mf), gap.replicate(mf - mp), sc)
        same += (d, o.name) == decided
    log.debug("decision stability %d/%d (%s)", same, len(reps_p), method)
    return Stability(same / len(reps_p), len(reps_p), method)
