"""The majority-class baseline of a classification run, and the variants no better than it.

The baseline is the metric (`adaptlab.metrics`, so macro-F1 works too) of always predicting the most frequent
gold label of the test sample (ties: the label first in sorted order), computed on the gold labels of the
prediction rows. A (variant, n_train) is flagged when its seed mean is at or below that value, or when it
predicts one label for every example on every seed (from its prediction rows, else from its classification
report's confusion matrix). A variant that collapses on some seeds only is noted, not flagged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adaptlab.analysis.curves import TIE, groups, mean
from adaptlab.analysis.records import Baseline, Flag
from adaptlab.errors import ConfigError
from adaptlab.metrics import get_metric
from adaptlab.results import CellRecord, PredictionRow

log = logging.getLogger(__name__)

TRAIN_COUNTS = "train_label_counts"
"""Key of a cell's ``extra`` holding its training labels' counts ({label: count}), when the cell recorded them."""


def _report_classes(report: Mapping[str, Any]) -> int | None:
    """How many distinct predictions a classification report's confusion shows (None: no confusion)."""
    conf = report.get("confusion")
    if not isinstance(conf, list) or not conf:
        return None
    cols = [sum(row[j] for row in conf) for j in range(len(conf[0]))]
    other = sum(report.get("confusion_other") or [])
    return sum(1 for v in cols if v > 0) + (1 if other else 0)


def one_class(cell: CellRecord, rows: Sequence[PredictionRow]) -> str | None:
    """The one label ``cell`` predicts for every example (None when it predicts two or more, or unknown)."""
    preds = {r.pred.strip() for r in rows}
    if len(rows) > 1:
        return next(iter(preds)) if len(preds) == 1 else None
    if _report_classes(cell.report) == 1:
        labels, conf = cell.report.get("labels") or [], cell.report["confusion"]
        col = next((j for j in range(len(conf[0])) if any(row[j] for row in conf)), None)
        return str(labels[col]) if col is not None and col < len(labels) else "(not a label)"
    return None


def _prior(cells: Sequence[CellRecord], gold: Sequence[str]) -> tuple[dict[str, float], str]:
    counts: Counter[str] = Counter()
    for c in cells:
        recorded = c.extra.get(TRAIN_COUNTS)
        if isinstance(recorded, Mapping) and recorded:
            counts = Counter({str(k): float(v) for k, v in recorded.items()})
            break
    source = "training labels" if counts else "test sample"
    counts = counts or Counter(gold)
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())}, source


def majority_baseline(cells: Sequence[CellRecord], predictions: Callable[[str], list[PredictionRow]],
                      metric: str) -> tuple[Baseline | None, list[str]]:
    """The baseline and its flags (None for a generation metric or without prediction rows), and notes."""
    try:
        m = get_metric(metric)
    except ConfigError:
        return None, []
    if m.kind != "classification":
        return None, []
    rows = {c.key: predictions(c.key) for c in cells}
    gold: dict[str, str] = {}
    for c in cells:
        for r in rows[c.key]:
            gold.setdefault(str(r.example_id), r.gold.strip())
    if not gold:
        return None, ["no majority baseline: no prediction rows to read the test labels from"]
    golds = list(gold.values())
    counts = Counter(golds)
    label = min(counts, key=lambda k: (-counts[k], k))
    value = m.corpus([label] * len(golds), golds)
    prior, source = _prior(cells, golds)
    base = Baseline(metric, value, label, len(golds), prior, source)
    notes = []
    for (variant, n), group in sorted(groups(cells).items()):
        why = []
        avg = mean(c.value for c in group)
        if avg <= value + TIE:
            why.append(f"at or below the majority baseline ({value:.4g}: always '{label}')")
        single = [one_class(c, rows[c.key]) for c in group]
        if all(s is not None for s in single):
            why.append(f"predicts one class for every example ('{single[0]}')" if len(set(single)) == 1
                       else "predicts one class for every example on every seed")
        elif any(s is not None for s in single):
            notes.append(f"{variant} at n={n}: predicts one class for every example on "
                         f"{sum(s is not None for s in single)} of {len(group)} seeds")
        if why:
            base.flagged.append(Flag(variant, n, avg, why))
    return base, notes
