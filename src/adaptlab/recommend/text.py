"""The recommendation as data (`Recommendation`), and the number formats its sentences use."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Decision = Literal["prompt", "finetune", "collect_labels", "too_close"]


@dataclass
class Recommendation:
    """What to ship and why; every reason cites measured (or published) numbers."""

    decision: Decision
    choice: str | None
    """Variant to ship (too_close: the cheaper of the two, among those meeting the target if one is set;
    collect_labels: the variant to train)."""
    cell_key: str | None
    """Cell whose artifact goes to RUN_DIR/best/ (when the choice is still to be trained, as in
    collect_labels: the best candidate to ship meanwhile)."""
    headline: str
    reasons: list[str] = field(default_factory=list)
    would_change: list[str] = field(default_factory=list)
    basis: Literal["measured", "estimate"] = "measured"
    labels_needed: int | None = None
    """Labels used in all (training + dev; not the extra) measured or projected to reach the accuracy target."""
    break_even: str | None = None
    """The break-even sentence for the two options the decision weighed (the terminal, summary.md and report.html
    all show this one)."""
    evidence: str | None = None
    """What the evidence rests on when it is thin (few test examples, one seed), and what would firm it up."""
    labels_low: int | None = None
    """Low end of the 90% interval of a projected ``labels_needed`` (None: measured, refused or one seed)."""
    labels_high: int | None = None
    """High end of that interval."""
    stability: float | None = None
    """Share of bootstrap replicates (seeds and test examples resampled) giving the same decision and choice
    (None: not computed, e.g. one candidate only)."""
    stability_replicates: int = 0
    """How many replicates ``stability`` is over."""
    alternative: str | None = None
    """too_close: the other option weighed (``choice`` is the one shipped)."""
    assumptions: list[str] = field(default_factory=list)
    """The cost assumptions behind the $ figures, one sentence each (`adaptlab.analysis.cost_assumptions`)."""
    flagged: list[str] = field(default_factory=list)
    """Variants among the candidates no better than the majority baseline or predicting one class, with why."""
    options: list[dict[str, Any]] = field(default_factory=list)
    """Each arm's best option under the scenario (prompt, fine-tune, distil, cascade): ``arm``, ``variant``,
    ``n_train``, ``labels``, ``mean``, ``low``, ``high``, ``metric``, ``usd_per_1k``, ``one_off``, ``total``,
    ``meets_target``, ``chosen``, ``model``, ``price`` (how its queries are priced)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_of(values: Any) -> float:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else 0.0


def fmt_num(x: float) -> str:
    """Compact count: 950, 40k, 1.2M (scientific from 1e12)."""
    if abs(x) >= 1e12:
        return f"{x:.1e}"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def fmt_usd(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 1 or x == 0 else f"${x:.3g}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def round_up(n: float) -> int:
    """Ceil to two significant digits (a projection is no more precise than that)."""
    n = max(1.0, math.ceil(n))
    step = 10 ** max(0, int(math.log10(n)) - 1)
    return int(math.ceil(n / step) * step)


# -- Candidates and quality gap ----------------------------------------------------------------


ARM_VERBS = {"prompt": "Prompt", "finetune": "Fine-tune", "distill": "Distil", "cascade": "Cascade"}
"""The headline's verb for the arm of the chosen option."""
ARM_NAMES = {"prompt": "prompt", "finetune": "fine-tune", "distill": "distil", "cascade": "cascade"}

DECISION_WORDS = {"prompt": "prompt", "finetune": "fine-tune", "collect_labels": "collect more labels",
                  "too_close": "too close to call"}
"""How each decision reads in a sentence (never the raw name)."""


def decision_phrase(decision: str, name: str) -> str:
    """'you would prompt with X' and the like, for 'what would change it' sentences."""
    if decision == "too_close":
        return f"it would be too close to call (ship the cheaper, {name})"
    if decision == "collect_labels":
        return f"you would collect more labels for {name}"
    return f"you would {DECISION_WORDS.get(decision, decision)} with {name}"


def metric_scale(metric: str) -> float:
    """The metric's maximum (1 for accuracy-like metrics, 100 for chrF and BLEU)."""
    try:
        from adaptlab.metrics import get_metric

        return float(get_metric(metric).scale)
    except Exception:  # noqa: BLE001 - an unknown metric reads as a [0, 1] one
        return 1.0


def fmt_metric(value: float, metric: str) -> str:
    """A metric value at the precision its scale warrants: 0.853 (accuracy), 45.3 (chrF)."""
    return f"{value:.1f}" if metric_scale(metric) > 1 else f"{value:.3f}"


def fmt_points(diff: float, metric: str) -> str:
    """A difference in points of the metric: x100 for [0, 1] metrics."""
    return f"{diff * (100 if metric_scale(metric) <= 1 else 1):+.1f}"


def fmt_p(p: float) -> str:
    """A p-value as every output writes it: ``p = 0.012``, ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_queries(q: float) -> str:
    """A break-even volume: 'from the first query' below one query a month."""
    return "from the first query" if q < 1 else f"at {fmt_num(q)} queries a month"


def a_an(word: str) -> str:
    """The article for ``word`` ("an accuracy target", "a chrF target")."""
    return "an" if word[:1].lower() in "aeio" else "a"
