"""Paired significance: the best fine-tune against the best prompt on the test examples they share, seeds
resampled too (`adaptlab.analysis.stats`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from adaptlab.analysis.records import Best, Significance
from adaptlab.analysis.stats import hierarchical_paired_bootstrap, shared_ids
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


def seed_scores(cells: Sequence[CellRecord], predictions: Callable[[str], list[PredictionRow]]
                ) -> list[dict[str, float]]:
    """Per cell (seed), {example id: per-example score}."""
    return [{i: r.score for i, r in _by_id(predictions(c.key)).items()} for c in cells]


def compare_best(a: Best, b: Best, predictions: Callable[[str], list[PredictionRow]], *,
                 seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95) -> Significance:
    """Paired significance of ``a`` - ``b``. Mean metrics: `stats.hierarchical_paired_bootstrap` (each side's
    seeds resampled, the examples every cell shares resampled jointly for both sides). Other metrics (macro-F1,
    BLEU, chrF): `paired_significance` of the `representative` cells (seeds not resampled). ValueError if the
    cells share no example."""
    name = a.cells[0].metric
    m = _metric(name)
    if m is not None and not m.is_mean:
        ca, cb = representative(a), representative(b)
        sig = paired_significance(ca, cb, predictions(ca.key), predictions(cb.key), metric=name,
                                  seed=seed, n_resamples=n_resamples, confidence=confidence)
        sig.method += (f" (the cells nearest each side's mean of {len(a.cells)} vs {len(b.cells)} seeds; "
                       "seeds not resampled)")
        return sig
    sa, sb = seed_scores(a.cells, predictions), seed_scores(b.cells, predictions)
    if not shared_ids(sa, sb):
        raise ValueError(f"{a.variant} and {b.variant} share no test example ids")
    t = hierarchical_paired_bootstrap(sa, sb, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Significance(a.variant, b.variant, t.diff, t.low, t.high, t.p_value, t.n, t.significant, name,
                        f"hierarchical paired bootstrap over {t.seeds_a} vs {t.seeds_b} seeds and {t.n} shared "
                        "examples", t.seeds_a, t.seeds_b)
