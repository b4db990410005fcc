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
    """Variant to ship (too_close: the cheaper of the two; collect_labels: the variant to train)."""
    cell_key: str | None
    """Cell whose artifact goes to RUN_DIR/best/ (when the choice is still to be trained, as in
    collect_labels: the best candidate to ship meanwhile)."""
    headline: str
    reasons: list[str] = field(default_factory=list)
    would_change: list[str] = field(default_factory=list)
    basis: Literal["measured", "estimate"] = "measured"
    labels_needed: int | None = None
    """Labels in all (not the extra) measured or projected to reach the accuracy target."""

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
