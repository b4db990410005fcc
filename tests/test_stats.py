"""adaptlab.analysis.stats: the hierarchical bootstrap over seeds and examples, and the saturating
learning-curve projection, on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptlab.analysis.stats import (HIERARCHICAL, FittedCurve, fit_curve, hierarchical_interval,
                                     hierarchical_paired_bootstrap, measured_labels_to_reach, project_labels,
                                     score_matrix, shared_ids)
from adaptlab.metrics import paired_bootstrap_scores

N_TEST = 300


def nested(means: list[float], n: int = N_TEST, order_seed: int = 1) -> list[dict[str, float]]:
    """Per seed {example id: 0/1}: examples ranked by one shared difficulty, each seed solves the easiest
    round(mean * n) (so every variant finds the same examples hard, as real models do)."""
    rank = np.random.default_rng(order_seed).permutation(n)
    return [{f"ex{i}": float(rank[i] < round(m * n)) for i in range(n)} for m in means]


# -- hierarchical bootstrap ----------------------------------------------------------------------

def test_disagreeing_seeds_are_not_significant_although_the_seed_averaged_test_says_so():
    shaky = nested([0.55, 0.95, 0.60])  # mean 0.70: one lucky seed carries it
    steady = nested([0.66, 0.66, 0.66])
    h = hierarchical_paired_bootstrap(shaky, steady, seed=0)
    assert h.diff == pytest.approx(0.04) and h.estimate_a == pytest.approx(0.70)
    assert (h.n, h.seeds_a, h.seeds_b, h.method) == (N_TEST, 3, 3, HIERARCHICAL)
    assert h.p_value > 0.05 and not h.significant and h.low < 0 < h.high

    ids = shared_ids(shaky, steady)  # the old way: average each example over seeds, then pair
    old = paired_bootstrap_scores(score_matrix(shaky, ids).mean(axis=0), score_matrix(steady, ids).mean(axis=0),
                                  n_resamples=2000, seed=0)
    assert old.diff == pytest.approx(0.04)
    assert old.p_value < 0.05 and old.low > 0  # averaging the seeds first hides their disagreement
    assert h.p_value > 10 * old.p_value


def test_two_steady_variants_ten_points_apart_are_significant():
    h = hierarchical_paired_bootstrap(nested([0.74, 0.75, 0.76]), nested([0.64, 0.65, 0.66]), seed=0)
    assert h.diff == pytest.approx(0.10)
    assert h.p_value < 0.01 and h.significant and 0.05 < h.low < 0.10 < h.high < 0.15
    reverse = hierarchical_paired_bootstrap(nested([0.64, 0.65, 0.66]), nested([0.74, 0.75, 0.76]), seed=0)
    assert reverse.diff == pytest.approx(-0.10) and reverse.p_value < 0.01 and reverse.high < 0


def test_p_value_is_smoothed_never_zero_and_one_for_equal_sides():
    h = hierarchical_paired_bootstrap(nested([0.9] * 3), nested([0.5] * 3), n_resamples=200, seed=0)
    assert h.p_value == pytest.approx(2 / 201)  # no replicate crosses 0: (0 + 1) / (200 + 1), doubled
    same = nested([0.6, 0.7])
    assert hierarchical_paired_bootstrap(same, same).p_value == 1.0


def test_single_seeds_reduce_to_the_paired_example_bootstrap():
    rng = np.random.default_rng(5)
    a, b = rng.random((1, 400)), rng.random((1, 400)) * 0.9
    h = hierarchical_paired_bootstrap(a, b, n_resamples=4000, seed=1)
    old = paired_bootstrap_scores(a[0], b[0], n_resamples=4000, seed=1)
    assert h.diff == pytest.approx(old.diff)
    assert h.low == pytest.approx(old.low, abs=0.006) and h.high == pytest.approx(old.high, abs=0.006)


def test_shared_ids_arrays_and_seeding():
    a, b = nested([0.6, 0.7]), nested([0.5])
    del a[0]["ex0"], b[0]["ex1"]
    ids = shared_ids(a, b)
    assert len(ids) == N_TEST - 2 and "ex0" not in ids and "ex1" not in ids
    by_id = hierarchical_paired_bootstrap(a, b, seed=3)
    by_array = hierarchical_paired_bootstrap(score_matrix(a, ids), score_matrix(b, ids), seed=3)
    assert by_id == by_array == hierarchical_paired_bootstrap(a, b, seed=3)
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 50)), rng.random((2, 50))
    assert hierarchical_paired_bootstrap(x, y, seed=3) != hierarchical_paired_bootstrap(x, y, seed=4)
    with pytest.raises(ValueError, match="share no"):
        hierarchical_paired_bootstrap([{"x": 1.0}], [{"y": 0.0}])
    with pytest.raises(ValueError, match="finite"):
        hierarchical_interval([{"x": math.nan}])


def test_single_side_interval_covers_the_true_mean_at_about_the_nominal_rate():
    """Scores = true mean + seed effect + example difficulty + noise; 200 simulated runs of 4 seeds."""
    rng, true, hits = np.random.default_rng(0), 0.7, 0
    for r in range(200):
        scores = (true + rng.normal(0, 0.03, (4, 1)) + rng.normal(0, 0.2, (1, 100))
                  + rng.normal(0, 0.3, (4, 100)))
        iv = hierarchical_interval(scores, n_resamples=500, seed=r)
        hits += iv.low <= true <= iv.high
        assert iv.low < iv.mean < iv.high and (iv.n, iv.seeds, iv.confidence) == (100, 4, 0.95)
    assert 0.88 <= hits / 200 <= 0.99


def test_single_side_interval_widens_with_seed_disagreement():
    steady, shaky = hierarchical_interval(nested([0.7] * 3)), hierarchical_interval(nested([0.55, 0.95, 0.60]))
    assert steady.high - steady.low < 0.12 < shaky.high - shaky.low
    assert shaky.low < 0.6 and shaky.high > 0.9


# -- saturating learning curve ------------------------------------------------------------------

SIZES = (16, 64, 256, 1024)


def power_law_seeds(a: float, b: float, c: float, *, noise: float = 0.005, seeds: int = 3,
                    seed: int = 0) -> list[dict[int, float]]:
    rng = np.random.default_rng(seed)
    return [{n: a - b * n ** -c + rng.normal(0, noise) for n in SIZES} for _ in range(seeds)]


def flat(points: list[dict[int, float]]) -> tuple[list[int], list[float]]:
    return [n for p in points for n in p], [v for p in points for v in p.values()]


def test_fit_recovers_a_known_curve():
    curve = fit_curve(*flat(power_law_seeds(0.9, 0.8, 0.5, noise=0.0)))
    assert isinstance(curve, FittedCurve)
    assert (curve.a, curve.b, curve.c) == pytest.approx((0.9, 0.8, 0.5), rel=1e-3)
    assert curve.predict(256) == pytest.approx(0.85, abs=1e-4) and curve.predict([16, 64]).shape == (2,)
    assert curve.labels_to_reach(0.85) == pytest.approx(256, rel=0.01)
    assert curve.predict(curve.labels_to_reach(0.88)) == pytest.approx(0.88)
    assert curve.labels_to_reach(0.95) is None  # above the asymptote
    assert (curve.n_min, curve.n_max) == (16, 1024)


def test_the_asymptote_respects_the_metric_maximum():
    ns, values = flat([{n: 1.3 - 2.0 * n ** -0.5 for n in SIZES}])  # a curve heading past 1.0
    assert fit_curve(ns, values).a <= 1.0 + 1e-12
    assert fit_curve([n * 1.0 for n in ns], [v * 100 for v in values], max_score=130).a <= 130


def test_projection_recovers_the_true_labels_within_its_interval():
    seeds = power_law_seeds(0.9, 0.8, 0.5)
    p = project_labels(seeds, 0.85)  # true crossing at n = (0.8 / 0.05) ** 2 = 256
    assert p.measured and p.refused is None and p.n in (256, 1024)  # a measured size's mean reaches it
    assert p.low <= 256 <= p.high and p.reach_share > 0.9
    assert "measured, not projected" in p.notes[0]
    q = project_labels(seeds, 0.88)  # true crossing at 1600, beyond the largest measured size
    assert q.ok and not q.measured and q.n > 1024
    assert q.low <= 1600 <= q.high and q.confidence == 0.90 and q.seeds == 3
    assert q.curve.a == pytest.approx(0.9, abs=0.02)
    plain = project_labels(seeds, 0.88, widen=False)  # plain 5th-95th percentiles: narrower
    assert q.low <= plain.low <= plain.high <= q.high


def test_targets_beyond_the_data_are_refused_with_a_reason():
    seeds = power_law_seeds(0.95, 0.8, 0.5, noise=0.002)
    above = project_labels(seeds, 0.99)
    assert above.n is None and not above.ok and "levels off" in above.refused
    far = project_labels(seeds, 0.94)  # true crossing (0.8 / 0.01) ** 2 = 6400 > 4 x 1024
    assert far.n is None and "beyond 4x the largest measured size (1024)" in far.refused
    assert project_labels(seeds, 0.94, max_factor=20).ok


def test_too_few_reaching_replicates_are_refused():
    """Seeds measured at different sizes (failed cells): without seed 0 or seed 1 a resample has too few
    sizes to fit, and seed 2 alone with seed 0 levels off below the target."""
    seeds = [{16: 0.70, 64: 0.80}, {256: 0.85, 1024: 0.875}, {256: 0.82}]
    p = project_labels(seeds, 0.88)
    assert p.n is None and p.reach_share < 0.5 and "of the seed-bootstrap curves reach" in p.refused


def test_a_falling_curve_is_refused():
    seeds = [{16: 0.80, 64: 0.75, 256: 0.70, 1024: 0.65 + d} for d in (0.0, 0.01, -0.01)]
    p = project_labels(seeds, 0.9)
    assert p.n is None and "does not rise" in p.refused


def test_fewer_than_three_sizes_is_a_refusal_not_an_exception():
    two = [{16: 0.6, 64: 0.7}, {16: 0.62, 64: 0.71}]
    assert fit_curve(*flat(two)) is None
    p = project_labels(two, 0.9)
    assert p.n is None and "only 2 measured sizes" in p.refused
    assert "only 0 measured sizes" in project_labels([], 0.9).refused
    assert fit_curve([], []) is None and fit_curve([16, 64, 256], [0.5, math.nan, 0.7]) is None
    assert fit_curve([1, 2], [0.5, 0.6, 0.7]) is None  # mismatched lengths
    reached = project_labels(two, 0.65)  # measured even without a curve
    assert reached.ok and reached.measured and reached.n == 64


def test_one_seed_projects_without_an_interval():
    p = project_labels(power_law_seeds(0.9, 0.8, 0.5, seeds=1), 0.88)
    assert p.ok and p.low is None and p.high is None and "one seed" in p.notes[-1]


def test_measured_labels_to_reach_uses_the_mean_at_each_size():
    ns, values = [16, 16, 64, 64, 256, 0], [0.6, 0.8, 0.7, 0.72, 0.9, 0.99]
    assert measured_labels_to_reach(ns, values, 0.7) == 16  # mean 0.70 at n=16; n=0 is not a size
    assert measured_labels_to_reach(ns, values, 0.75) == 256
    assert measured_labels_to_reach(ns, values, 0.95) is None
