"""Paired significance: the best fine-tune against the best prompt on the test examples they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from adaptlab.analysis.curves import mean
from adaptlab.analysis.records import Best, Significance
from adaptlab.errors import ConfigError
from adaptlab.metrics import get_metric, paired_bootstrap, paired_bootstrap_scores
from adaptlab.results import CellRecord, PredictionRow


def _metric(name: str) -> Any | None:
    try:
        return get_metric(name)
    except ConfigError:
        return None  # unknown metric: treat the per-example scores as decomposable


def _by_id(rows: Iterable[PredictionRow]) -> dict[str, PredictionRow]:
    return {str(r.example_id): r for r in reversed(list(rows))}  # the first row of an id wins


def _significance(a: str, b: str, t: Any, confidence: float, metric: str, how: str) -> Significance:
    return Significance(a, b, t.diff, t.low, t.high, t.p_value, t.n, t.p_value < 1.0 - confidence,
                        metric, f"paired bootstrap on {t.n} shared examples, {how}")


def paired_significance(a: CellRecord, b: CellRecord, rows_a: Iterable[PredictionRow],
                        rows_b: Iterable[PredictionRow], *, metric: str | None = None, seed: int = 0,
                        n_resamples: int = 1000, confidence: float = 0.95) -> Significance:
    """Paired bootstrap of cell ``a`` - cell ``b`` on their shared example ids (ValueError if none):
    on per-example scores for mean metrics, on the corpus metric (pred vs gold) otherwise."""
    ra, rb = _by_id(rows_a), _by_id(rows_b)
    ids = [i for i in ra if i in rb]
    if not ids:
        raise ValueError(f"cells {a.key[:12]} and {b.key[:12]} share no test example ids")
    name = metric or a.metric
    m = _metric(name)
    if m is None or m.is_mean:
        t = paired_bootstrap_scores([ra[i].score for i in ids], [rb[i].score for i in ids],
                                    n_resamples=n_resamples, confidence=confidence, seed=seed)
    else:
        t = paired_bootstrap(m, [ra[i].pred for i in ids], [rb[i].pred for i in ids],
                             [ra[i].gold for i in ids], n_resamples=n_resamples,
                             confidence=confidence, seed=seed)
    return _significance(a.variant, b.variant, t, confidence, name, f"seed {a.seed} vs seed {b.seed}")


def representative(best: Best) -> CellRecord:
    """The Best's cell whose value is nearest its mean (ties: lowest seed)."""
    return min(best.cells, key=lambda c: (abs(c.value - best.mean), c.seed))


def compare_best(a: Best, b: Best, predictions: Callable[[str], list[PredictionRow]], *,
                 seed: int = 0, n_resamples: int = 1000, confidence: float = 0.95) -> Significance:
    """Paired significance of ``a`` - ``b``: per-example scores averaged over each side's seeds on
    the examples every cell shares (mean metrics), else `paired_significance` of `representative`
    cells. ValueError if they share no example."""
    name = a.cells[0].metric
    m = _metric(name)
    if m is not None and not m.is_mean:
        ca, cb = representative(a), representative(b)
        return paired_significance(ca, cb, predictions(ca.key), predictions(cb.key), metric=name,
                                   seed=seed, n_resamples=n_resamples, confidence=confidence)
    maps = [(c, _by_id(predictions(c.key))) for c in a.cells + b.cells]
    ids = [i for i in maps[0][1] if all(i in rows for _, rows in maps[1:])]
    if not ids:
        raise ValueError(f"{a.variant} and {b.variant} share no test example ids")

    def averaged(side: Sequence[tuple[CellRecord, dict[str, PredictionRow]]]) -> list[float]:
        return [mean(rows[i].score for _, rows in side) for i in ids]

    k = len(a.cells)
    t = paired_bootstrap_scores(averaged(maps[:k]), averaged(maps[k:]), n_resamples=n_resamples,
                                confidence=confidence, seed=seed)
    return _significance(a.variant, b.variant, t, confidence, name,
                         f"per-example scores averaged over {k} vs {len(b.cells)} seeds")
