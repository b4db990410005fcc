"""Statistics that respect both sources of noise in a run: seeds and test examples.

* `hierarchical_paired_bootstrap` compares two sides (a variant at one training size each), each
  given as per-seed per-example scores. Every replicate draws one resample of the test examples,
  shared by both sides (the comparison stays paired on examples), and, independently per side, a
  resample of that side's seeds with replacement (seeds of different variants are not paired: they
  are different demonstration sets or initialisations). A side's replicate value is the mean over
  its drawn seeds of the mean score over the drawn examples. Averaging seeds before a paired
  bootstrap over examples hides seed disagreement; this does not.
  `hierarchical_interval` is the same for one side's mean. In simulation (Gaussian seed, example and
  noise effects) its 95% interval covers 95-100% of the time (resampling both levels counts the
  seed x example noise twice: conservative), falling to ~88-94% with 3-5 seeds whose spread dominates.
* `fit_curve` fits the saturating inverse power law ``score(n) = a - b * n**-c`` (``a`` <= the
  metric's maximum, ``b`` > 0, 0 < ``c`` <= 2) to (labels, value) points; `project_labels` turns it
  into the labels needed to reach a target, with a bootstrap over seeds (whole per-seed curves
  resampled, each replicate refitted), and refuses to project beyond what the data support.

Pure numpy/scipy: no adaptlab imports.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import norm
from scipy.stats import t as student_t

Side = Sequence[Mapping[Any, float]] | np.ndarray
"""One side: per seed, {example id: score} (or a (seeds, examples) array already aligned)."""

HIERARCHICAL = "hierarchical bootstrap over seeds and examples"
TIE = 1e-9
"""A mean this close below a target counts as reaching it."""
_MAX_CELLS = 2_000_000  # bound on replicates * examples in one chunk of example indices
_C_GRID = np.linspace(0.02, 2.0, 100)  # exponents tried to start the curve fit


# -- Hierarchical bootstrap over seeds and examples --------------------------------------------

@dataclass(frozen=True)
class HierarchicalTest:
    """``a`` - ``b``: observed ``diff`` (mean over seeds of the mean over the ``n`` shared examples),
    its percentile interval [low, high] and a two-sided p-value (share of replicates on the other
    side of 0, +1 smoothed, doubled, capped at 1; 1 when ``diff`` is 0)."""

    diff: float
    low: float
    high: float
    p_value: float
    n: int
    seeds_a: int
    seeds_b: int
    confidence: float
    method: str = HIERARCHICAL
    estimate_a: float = math.nan
    estimate_b: float = math.nan
    n_resamples: int = 0

    @property
    def significant(self) -> bool:
        return self.p_value < 1.0 - self.confidence


@dataclass(frozen=True)
class HierarchicalInterval:
    """One side's ``mean`` (over seeds of the mean over ``n`` examples) and its percentile interval."""

    mean: float
    low: float
    high: float
    n: int
    seeds: int
    confidence: float
    method: str = HIERARCHICAL
    n_resamples: int = 0


def shared_ids(*sides: Sequence[Mapping[Any, float]]) -> list[str]:
    """The example ids every cell of every side has, sorted (as strings)."""
    cells = [cell for side in sides for cell in side]
    if not cells:
        return []
    common = set.intersection(*({str(k) for k in cell} for cell in cells))
    return sorted(common)


def score_matrix(side: Sequence[Mapping[Any, float]], ids: Sequence[str]) -> np.ndarray:
    """(seeds, len(ids)) array of one side's scores on ``ids``."""
    rows = [{str(k): v for k, v in cell.items()} for cell in side]
    return np.array([[row[i] for i in ids] for row in rows], dtype=np.float64).reshape(len(rows), len(ids))


def _matrices(*sides: Side) -> list[np.ndarray]:
    if all(isinstance(s, np.ndarray) for s in sides):
        mats = [np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in sides]
        if len({m.shape[1] for m in mats}) > 1:
            raise ValueError("the sides' score arrays cover different numbers of examples")
    else:
        as_maps = [list(s) for s in sides]  # type: ignore[arg-type]
        ids = shared_ids(*as_maps)
        mats = [score_matrix(s, ids) for s in as_maps]
    for m in mats:
        if m.shape[0] < 1:
            raise ValueError("each side needs at least one seed")
        if m.shape[1] < 1:
            raise ValueError("the cells share no test example ids")
        if not np.all(np.isfinite(m)):
            raise ValueError("per-example scores must be finite numbers")
    return mats


def _check(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _seed_weights(rng: np.random.Generator, m: int, s: int) -> np.ndarray:
    """(m, s) share of each of s seeds in m resamples of the seeds with replacement."""
    draws = rng.integers(0, s, size=(m, s)) + (np.arange(m) * s)[:, None]
    return np.bincount(draws.ravel(), minlength=m * s).reshape(m, s) / s


def _replicates(mats: Sequence[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Per side, the replicate values: example indices shared, seeds drawn per side."""
    rng = np.random.default_rng(seed)
    n = mats[0].shape[1]
    rows = max(1, min(n_resamples, _MAX_CELLS // n))
    out: list[list[np.ndarray]] = [[] for _ in mats]
    done = 0
    while done < n_resamples:
        m = min(rows, n_resamples - done)
        idx = rng.integers(0, n, size=(m, n))  # one example resample per replicate, both sides
        for acc, mat in zip(out, mats):
            per_example = _seed_weights(rng, m, mat.shape[0]) @ mat  # (m, n): drawn seeds' mean score
            acc.append(np.take_along_axis(per_example, idx, axis=1).mean(axis=1))
        done += m
    return [np.concatenate(acc) for acc in out]


def _interval(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return float(low), float(high)


def hierarchical_paired_bootstrap(a: Side, b: Side, *, n_resamples: int = 2000, confidence: float = 0.95,
                                  seed: int = 0) -> HierarchicalTest:
    """Hierarchical paired bootstrap of side ``a`` - side ``b`` on the example ids every cell shares
    (module doc). ValueError if they share none or a score is not finite."""
    _check(n_resamples, confidence)
    ma, mb = _matrices(a, b)
    est_a, est_b = float(ma.mean(axis=1).mean()), float(mb.mean(axis=1).mean())
    diff = est_a - est_b
    diffs = np.subtract(*_replicates([ma, mb], n_resamples, seed))
    low, high = _interval(diffs, confidence)
    if diff == 0.0:
        p_value = 1.0
    else:
        flips = int(np.count_nonzero(diffs * math.copysign(1.0, diff) <= 0.0))
        p_value = min(1.0, 2.0 * (flips + 1) / (n_resamples + 1))
    return HierarchicalTest(diff, low, high, p_value, ma.shape[1], ma.shape[0], mb.shape[0], confidence,
                            HIERARCHICAL, est_a, est_b, n_resamples)


def hierarchical_interval(side: Side, *, n_resamples: int = 2000, confidence: float = 0.95,
                          seed: int = 0) -> HierarchicalInterval:
    """Percentile interval of one side's mean, resampling its seeds and the examples all its cells share."""
    _check(n_resamples, confidence)
    (mat,) = _matrices(side)
    low, high = _interval(_replicates([mat], n_resamples, seed)[0], confidence)
    return HierarchicalInterval(float(mat.mean(axis=1).mean()), low, high, mat.shape[1], mat.shape[0],
                                confidence, HIERARCHICAL, n_resamples)


# -- Saturating learning curve -----------------------------------------------------------------

def _power_law(n: Any, a: float, b: float, c: float) -> Any:
    return a - b * np.power(n, -c)


@dataclass(frozen=True)
class FittedCurve:
    """``score(n) = a - b * n**-c`` fitted to points at ``n_min``..``n_max`` labels (``rmse`` of the
    per-size means, weighted by points per size)."""

    a: float
    b: float
    c: float
    n_min: float
    n_max: float
    rmse: float

    def predict(self, n: Any) -> Any:
        """The curve at ``n`` labels (a number or an array)."""
        out = _power_law(np.asarray(n, dtype=np.float64), self.a, self.b, self.c)
        return float(out) if np.ndim(out) == 0 else out

    def labels_to_reach(self, target: float) -> float | None:
        """The n where the curve reaches ``target``; None if its asymptote is not above ``target``."""
        gap = self.a - target
        if gap <= 0.0:
            return None
        with np.errstate(over="ignore", divide="ignore"):
            n = float(np.power(self.b / gap, 1.0 / self.c))
        return n if math.isfinite(n) else None


def _points(ns: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct n > 0, mean value at each, points at each), finite points only."""
    x = np.asarray(ns, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    if x.shape != y.shape:
        return np.empty(0), np.empty(0), np.empty(0)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    sizes, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=y, minlength=sizes.size) / np.maximum(counts, 1)
    return sizes, means, counts.astype(np.float64)


def _start(x: np.ndarray, y: np.ndarray, w: np.ndarray, max_score: float) -> tuple[float, float, float]:
    """Best (a, b, c) over a grid of c, with (a, b) by weighted least squares clipped to the bounds."""
    X = np.power(x[None, :], -_C_GRID[:, None])  # (grid, k)
    sw = w.sum()
    xm, ym = X @ w / sw, float(y @ w / sw)
    dx = X - xm[:, None]
    b = -(dx * w) @ (y - ym) / np.maximum((dx * dx) @ w, 1e-300)
    b = np.maximum(b, 1e-9)
    a = ym + b * xm
    over = a > max_score
    if np.any(over):
        a[over] = max_score
        b[over] = np.maximum((X[over] * w) @ (max_score - y) / np.maximum((X[over] ** 2) @ w, 1e-300), 1e-9)
    sse = ((a[:, None] - b[:, None] * X - y) ** 2) @ w
    i = int(np.argmin(sse))
    return float(a[i]), float(b[i]), float(_C_GRID[i])


def fit_curve(ns: Sequence[float], values: Sequence[float], *, max_score: float = 1.0) -> FittedCurve | None:
    """Fit ``a - b * n**-c`` to (labels, value) points (e.g. one per seed and size) by bounded least
    squares (`scipy.optimize.curve_fit`); None with fewer than 3 distinct n > 0 or if the fit fails."""
    try:
        x, y, w = _points(ns, values)
        if x.size < 3 or not math.isfinite(max_score):
            return None
        p0 = _start(x, y, w, max_score)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            (a, b, c), _ = curve_fit(_power_law, x, y, p0=p0, sigma=1.0 / np.sqrt(w),
                                     bounds=([-np.inf, 1e-12, 1e-3], [max_score, np.inf, 2.0]), method="trf",
                                     max_nfev=2000)
        if not all(math.isfinite(v) for v in (a, b, c)):
            return None
        rmse = float(np.sqrt(((_power_law(x, a, b, c) - y) ** 2) @ w / w.sum()))
        return FittedCurve(float(a), float(b), float(c), float(x[0]), float(x[-1]), rmse)
    except (ValueError, RuntimeError, TypeError, FloatingPointError, np.linalg.LinAlgError):
        return None


def measured_labels_to_reach(ns: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """The smallest measured n > 0 whose mean value (over the points at that n) reaches ``target``."""
    sizes, means, _ = _points(ns, values)
    hit = np.nonzero(means >= target - TIE)[0]
    return float(sizes[hit[0]]) if hit.size else None


@dataclass(frozen=True)
class Projection:
    """Labels needed to reach ``target`` on a learning curve.

    ``n``: the smallest measured size reaching it when ``measured``, else the fitted curve's crossing;
    None when ``refused`` (the reason; read it first). ``low``/``high``: the ``confidence`` interval
    (5th-95th percentiles at 90%, then `_widen`-ed for few seeds) of the fitted crossing over the
    seed-bootstrap replicates that reach the target, ``reach_share`` the share that do (None/NaN when
    not computed: one seed, no fit)."""

    target: float
    n: float | None
    low: float | None
    high: float | None
    reach_share: float
    measured: bool
    refused: str | None
    n_max: float
    seeds: int
    curve: FittedCurve | None = None
    confidence: float = 0.90
    n_resamples: int = 0
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.refused is None and self.n is not None


def _seed_points(points_by_seed: Mapping[Any, Mapping[float, float]] | Sequence[Mapping[float, float]]
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    seeds = list(points_by_seed.values()) if isinstance(points_by_seed, Mapping) else list(points_by_seed)
    out = []
    for pts in seeds:
        x, y = (np.asarray(list(v), dtype=np.float64) for v in (pts.keys(), pts.values()))
        keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
        if keep.any():
            out.append((x[keep], y[keep]))
    return out


def _rises(x: np.ndarray, y: np.ndarray) -> bool:
    """The per-size means go up: positive least-squares slope against ln n, and last above first."""
    lx = np.log(x)
    slope = float(((lx - lx.mean()) * (y - y.mean())).sum())
    return slope > 0.0 and y[-1] > y[0]


def _bootstrap_crossings(seeds: list[tuple[np.ndarray, np.ndarray]], target: float, max_score: float,
                         n_resamples: int, seed: int) -> np.ndarray:
    """Per replicate (seeds resampled with replacement, curve refitted) the crossing; NaN if none."""
    rng = np.random.default_rng(seed)
    draws = np.sort(rng.integers(0, len(seeds), size=(n_resamples, len(seeds))), axis=1)
    cache: dict[tuple[int, ...], float] = {}
    out = np.empty(n_resamples)
    for r, row in enumerate(draws):
        key = tuple(int(i) for i in row)
        if key not in cache:
            curve = fit_curve(np.concatenate([seeds[i][0] for i in key]),
                              np.concatenate([seeds[i][1] for i in key]), max_score=max_score)
            n = curve.labels_to_reach(target) if curve is not None else None
            cache[key] = math.nan if n is None else n
        out[r] = cache[key]
    return out


def _widen(estimate: float, low: float, high: float, seeds: int, confidence: float) -> tuple[float, float]:
    """Widen [low, high] in log n about ``estimate`` by t(seeds-1)/z x sqrt(seeds/(seeds-1)): the
    bootstrap over few seeds is too narrow (plain percentiles cover ~60% at 90% with 3 seeds)."""
    q = 0.5 + confidence / 2.0
    k = float(student_t.ppf(q, seeds - 1) / norm.ppf(q)) * math.sqrt(seeds / (seeds - 1))
    c, lo, hi = math.log(estimate), math.log(low), math.log(high)
    return math.exp(min(lo, c - k * (c - lo))), math.exp(max(hi, c + k * (hi - c)))


def project_labels(points_by_seed: Mapping[Any, Mapping[float, float]] | Sequence[Mapping[float, float]],
                   target: float, *, max_score: float = 1.0, n_resamples: int = 500, seed: int = 0,
                   max_factor: float = 4.0, confidence: float = 0.90, widen: bool = True) -> Projection:
    """Labels a learning curve (per seed, {labels: value}) needs to reach ``target``; data it cannot
    project give a refusal, not an exception.

    Measured when some size's mean already reaches it. Otherwise `fit_curve` on every seed's points,
    with a bootstrap over seeds for the interval; refused (with the reason) when fewer than 3 sizes
    were measured, the measured means do not rise, the fit fails, the fitted asymptote is not above
    the target, the crossing lies beyond ``max_factor`` x the largest measured size, or fewer than
    half of the replicates reach the target. ``widen``: `_widen` the percentile interval for few seeds."""
    seeds = _seed_points(points_by_seed)
    xs = np.concatenate([s[0] for s in seeds]) if seeds else np.empty(0)
    ys = np.concatenate([s[1] for s in seeds]) if seeds else np.empty(0)
    sizes, means, _ = _points(xs, ys)
    n_max = float(sizes[-1]) if sizes.size else math.nan
    base: dict[str, Any] = {"target": target, "n_max": n_max, "seeds": len(seeds), "confidence": confidence}

    def refuse(reason: str, **kw: Any) -> Projection:
        return Projection(n=None, low=None, high=None, measured=False, refused=reason,
                          **{"reach_share": math.nan, **base, **kw})

    measured = measured_labels_to_reach(xs, ys, target)
    if sizes.size < 3:
        if measured is not None:
            note = f"measured: reaches the target at n={measured:g}; no curve fitted to {sizes.size} size(s)"
            return Projection(n=measured, low=None, high=None, reach_share=math.nan, measured=True,
                              refused=None, notes=(note,), **base)
        return refuse(f"only {sizes.size} measured size{'s' if sizes.size != 1 else ''} "
                      "(a curve needs at least 3): not projected")
    if measured is None and not _rises(sizes, means):
        return refuse("the measured curve does not rise with more labels: not projected")
    curve = fit_curve(xs, ys, max_score=max_score)
    if curve is None:
        if measured is not None:
            return Projection(n=measured, low=None, high=None, reach_share=math.nan, measured=True,
                              refused=None, notes=("measured; the curve fit failed",), **base)
        return refuse("the learning-curve fit failed: not projected")
    n_hat = curve.labels_to_reach(target)
    if measured is None and n_hat is None:
        return refuse(f"the fitted curve levels off at {curve.a:.4g}, not above the target {target:.4g}: "
                      "not projected", curve=curve)
    notes: list[str] = []
    low = high = None
    share = math.nan
    if len(seeds) < 2 or n_resamples < 1:
        notes.append("one seed: no interval over seeds" if len(seeds) < 2 else "no bootstrap (n_resamples < 1)")
    else:
        reps = _bootstrap_crossings(seeds, target, max_score, n_resamples, seed)
        hits = reps[np.isfinite(reps)]
        share = hits.size / n_resamples
        if hits.size:
            low, high = _interval(hits, confidence)
            centre = n_hat if n_hat is not None else float(np.median(hits))
            if widen:
                low, high = _widen(centre, low, high, len(seeds), confidence)
    extra = {"curve": curve, "n_resamples": n_resamples if math.isfinite(share) else 0, "reach_share": share}
    if measured is not None:
        notes.insert(0, f"measured, not projected: the mean reaches the target at n={measured:g}")
        return Projection(n=measured, low=low, high=high, measured=True, refused=None, notes=tuple(notes),
                          **base, **extra)
    assert n_hat is not None
    if n_hat > max_factor * n_max:
        return refuse(f"the fitted curve would need about {n_hat:.0f} labels, beyond {max_factor:g}x the "
                      f"largest measured size ({n_max:g}): not projected", **extra)
    if share < 0.5:
        return refuse(f"only {share:.0%} of the seed-bootstrap curves reach the target: not projected",
                      **extra)
    notes.insert(0, f"projected from a saturating fit (asymptote {curve.a:.4g}), measured up to n={n_max:g}")
    return Projection(n=n_hat, low=low, high=high, measured=False, refused=None, notes=tuple(notes), **base,
                      **extra)
