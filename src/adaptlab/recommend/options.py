"""The candidates a measured recommendation weighs (one per family), their costs under a scenario, the quality gap
between two of them and the decision rule (`decide_rule`; the rules are in `adaptlab.recommend.decide`).

Costs of an option (means over its seeds' cells): the one-off = training compute + labels used x price per label,
paid once per training (``1 + task_changes_per_year x months / 12`` trainings: a task change needs new labels for a
fine-tune and for a prompt's demonstrations alike, and re-pays any fit); per query, `CellRecord.query_cost`.

Latency budget: a (variant, n_train) is excluded only when the LOWEST low end of its seeds' 95% intervals of the
median latency (`CellRecord.latency_interval`) is over the budget, i.e. when every seed's measurement lies wholly
above it. Seeds of one variant serve the same model; their latency differences are measurement noise (the same
model measured 274 ms and 465 ms on two seeds), so the budget excludes only what every measurement puts over it.
A kept option whose mean latency or highest high end is over the budget gets a warning sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

from adaptlab.analysis import best_of, compare_best, interval_of
from adaptlab.recommend.text import (Decision, fmt_metric, fmt_ms, fmt_num, fmt_p, fmt_points, fmt_queries, fmt_usd,
                                     mean_of)
from adaptlab.results import CellRecord, Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis, Best, Interval

MIN_GAIN = 0.01
"""Without a target, a significant gap smaller than this (1 point) is practically negligible."""
COST_TIE = 0.10
"""Totals within 10% of the dearer one count as equal cost (then quality decides)."""


def trainings(sc: Scenario) -> float:
    """Trainings paid over the horizon: the first, and one per task change."""
    return 1 + sc.task_changes_per_year * sc.months / 12


def labels_phrase(best: Best) -> str:
    """'16 labels', or '16 training labels, 116 used' when the cells read dev labels too."""
    n, used = best.n_train, best.labels
    return f"{n} labels" if not math.isfinite(used) or abs(used - n) < 0.5 else f"{n} training labels, {used:.0f} used"


@dataclass
class Option:
    """A candidate (one family's best under the scenario) with its scenario costs and its interval."""

    best: Best
    metric: str
    train_cost: float
    query_cost: float
    latency: float
    """Mean over seeds of the median single-query latency (the point latency)."""
    cell_key: str
    """The best seed's cell (its artifact is what ships)."""
    label_cost: float = 0.0
    latency_low: float = math.nan
    """The lowest low end of the seeds' 95% latency intervals (what a budget is checked against)."""
    latency_high: float = math.nan
    """The highest high end of the seeds' 95% latency intervals."""
    band: Interval | None = None
    """The interval shown for its mean (`Analysis.interval`), saying what it is."""

    @classmethod
    def of(cls, best: Best, sc: Scenario, band: Interval | None = None) -> Option:
        cells = best.cells
        lows, highs = zip(*(c.latency_interval() for c in cells))
        return cls(best, cells[0].metric, mean_of(c.train_cost(sc) for c in cells),
                   mean_of(c.query_cost(sc) for c in cells), mean_of(c.query_seconds for c in cells),
                   max(cells, key=lambda c: c.value).key, mean_of(c.label_cost(sc) for c in cells),
                   min(lows), max(highs), band or interval_of(cells))

    name = property(lambda self: self.best.variant)
    family = property(lambda self: self.best.family)
    mean = property(lambda self: self.best.mean)

    @property
    def one_off(self) -> float:
        """$ paid per training: compute and labels."""
        return self.train_cost + self.label_cost

    def total(self, sc: Scenario) -> float:
        return self.one_off * trainings(sc) + sc.queries_per_month * sc.months * self.query_cost

    @property
    def interval(self) -> tuple[float, float]:
        band = self.band or interval_of(self.best.cells)
        return band.low, band.high

    def with_mean(self, value: float) -> Option:
        """This option with another mean (a bootstrap replicate's)."""
        return replace(self, best=replace(self.best, mean=value))

    def fmt(self, value: float) -> str:
        return fmt_metric(value, self.metric)

    def describe(self) -> str:
        band = self.band or interval_of(self.best.cells)
        n = len(self.best.cells)
        what = band.method if n == 1 and "one seed" in band.method else f"{n} seed{'s' if n > 1 else ''}; {band.method}"
        return (f"{self.name} ({labels_phrase(self.best)}) scores {self.fmt(self.mean)} {self.metric} "
                f"[{self.fmt(band.low)}, {self.fmt(band.high)}] ({what})")

    def latency_warning(self, budget: float | None) -> str | None:
        """A sentence when the budget admits this option on its latency interval only."""
        if budget is None or not (self.latency > budget or self.latency_high > budget):
            return None
        return (f"Latency: {self.name} takes {fmt_ms(self.latency)} (95% intervals of its seeds' median latency "
                f"{fmt_ms(self.latency_low)}-{fmt_ms(self.latency_high)}), straddling the {fmt_ms(budget)} budget: "
                "kept, but it may not meet it.")


class Gap(NamedTuple):
    """Fine-tune minus prompt quality, whether the difference is established, and the sentence. A bootstrap
    replicate's difference is significantly positive above ``above``, negative below ``-below`` (`replicate`)."""

    diff: float
    significant: bool
    text: str
    above: float = math.inf
    below: float = math.inf

    def replicate(self, diff: float) -> Gap:
        """The gap with a replicate's difference, its interval shifted with it."""
        return self._replace(diff=diff, significant=diff > self.above or -diff > self.below)


def latency_ok(cells: list[CellRecord], budget: float | None) -> list[CellRecord]:
    """Cells of the (variant, n_train) groups the budget admits (module doc: the lowest low end decides)."""
    groups: dict[tuple[str, int], list[CellRecord]] = {}
    for c in cells:
        groups.setdefault((c.variant, c.n_train), []).append(c)
    return [c for g in groups.values() if budget is None or min(x.latency_interval()[0] for x in g) <= budget
            for c in g]


TUNED_ARMS = ("finetune", "distill", "cascade")
"""The arms that ship tuned weights (family ``finetune``), weighed against each other before the best prompt."""


def arm_candidates(cells: list[CellRecord], sc: Scenario, labels: float | None, budget: float | None,
                   analysis: Analysis | None = None) -> dict[str, Option | None]:
    """Per arm (prompt, finetune, distill, cascade), the best option within ``labels`` and the latency budget."""
    allowed = latency_ok(cells, budget)
    out: dict[str, Option | None] = {}
    for arm in ("prompt",) + TUNED_ARMS:
        mine = [c for c in allowed if (c.family == "prompt" if arm == "prompt" else
                                       c.family == "finetune" and c.arm == arm)]
        b = best_of(mine, "prompt" if arm == "prompt" else "finetune", max_labels=labels)
        out[arm] = Option.of(b, sc, analysis.interval(b.variant, b.n_train) if analysis else None) if b else None
    return out


def tuned_champion(arms: dict[str, Option | None], sc: Scenario, analysis: Analysis | None) -> Option | None:
    """The tuned option that goes up against the best prompt: the arms' bests (fine-tune, distil, cascade) weighed
    pairwise in that order by the same rule as the final decision (`decide_rule`: the target, quality gap and total
    cost)."""
    contenders = [o for arm in TUNED_ARMS if (o := arms.get(arm)) is not None]
    champion = contenders[0] if contenders else None
    for challenger in contenders[1:]:
        assert champion is not None
        gap = quality_gap(analysis, champion, challenger)
        _, champion, _ = decide_rule(champion, challenger, gap, sc)
    return champion


def candidates(cells: list[CellRecord], sc: Scenario, labels: float | None, budget: float | None,
               analysis: Analysis | None = None) -> dict[str, Option | None]:
    """The best prompt and the best tuned option (`tuned_champion`) within ``labels`` (labels used) and the latency
    budget, keyed by family."""
    arms = arm_candidates(cells, sc, labels, budget, analysis)
    return {"prompt": arms["prompt"], "finetune": tuned_champion(arms, sc, analysis)}


def _from_test(analysis: Analysis, p: Option, f: Option) -> Gap | None:
    """The gap from a paired test of these two: the analysis' own, else one run now on its prediction rows."""
    sig, bp, bf = analysis.significance, analysis.best_prompt, analysis.best_finetune
    same = bool(bp and bf) and (bp.variant, bp.n_train, bf.variant, bf.n_train) == (
        p.name, p.best.n_train, f.name, f.best.n_train)
    if not (sig is not None and same and {sig.a, sig.b} == {p.name, f.name}):
        sig = None
        if analysis.rows:
            try:
                sig = compare_best(f.best, p.best, analysis.predictions)
            except (ValueError, KeyError):
                return None
    if sig is None:
        return None
    s = 1.0 if sig.a == f.name else -1.0
    diff, (low, high) = s * sig.diff, sorted((s * sig.low, s * sig.high))
    m = p.metric
    return Gap(diff, bool(sig.significant),
               f"Fine-tuning minus prompting: {fmt_points(diff, m)} points of {m} (95% interval "
               f"[{fmt_points(low, m)}, {fmt_points(high, m)}], {sig.method}; {fmt_p(sig.p_value)}): "
               f"{'significant' if sig.significant else 'not significant'}.", diff - low, high - diff)


def quality_gap(analysis: Analysis | None, p: Option, f: Option) -> Gap:
    """The paired test of the two options when their predictions allow one, else whether their intervals overlap."""
    gap = _from_test(analysis, p, f) if analysis is not None else None
    if gap is not None:
        return gap
    (pl, ph), (fl, fh) = p.interval, f.interval
    apart = ph < fl or fh < pl
    return Gap(f.mean - p.mean, apart,
               f"Fine-tuning minus prompting: {fmt_points(f.mean - p.mean, p.metric)} points of {p.metric}; no paired "
               "test on these two (no shared predictions), and their intervals "
               f"{'do not overlap' if apart else 'overlap'}: the difference is {'clear' if apart else 'not established'}.",
               (f.mean - fl) + (ph - p.mean), (fh - f.mean) + (p.mean - pl))


def decide_rule(p: Option | None, f: Option | None, gap: Gap | None, sc: Scenario) -> tuple[Decision, Option, str]:
    """(decision, chosen, rule) when at least one candidate meets the target (rule 3 of `decide`)."""
    options = [o for o in (p, f) if o is not None]
    target = sc.accuracy_target
    meets = [o for o in options if target is None or o.mean >= target]
    if len(options) == 1 or len(meets) == 1:
        chosen = meets[0] if meets else options[0]
        return chosen.family, chosen, "only" if len(options) == 1 else "target"
    assert p is not None and f is not None and gap is not None
    cheaper, dearer = sorted((p, f), key=lambda o: o.total(sc))
    better = f if gap.diff > 0 else p
    if target is not None:
        tie = dearer.total(sc) - cheaper.total(sc) <= COST_TIE * dearer.total(sc)
        return (better.family, better, "quality") if gap.significant and tie else (cheaper.family, cheaper, "cost")
    if gap.significant and abs(gap.diff) >= MIN_GAIN:
        return better.family, better, "quality"
    return (cheaper.family, cheaper, "cost") if gap.significant else ("too_close", cheaper, "too_close")


# -- Costs in words ----------------------------------------------------------------------------

def break_even_volume(p: Option, f: Option, sc: Scenario) -> float | None:
    """Queries per month at which the two totals (labels included) are equal (None: they never cross)."""
    dq, dt = p.query_cost - f.query_cost, (f.one_off - p.one_off) * trainings(sc)
    return dt / (dq * sc.months) if sc.months > 0 and dq != 0 and dt / dq > 0 else None


def break_even_sentence(p: Option, f: Option, sc: Scenario) -> str:
    """The one break-even statement (the same in the terminal, summary.md and report.html)."""
    q = break_even_volume(p, f, sc)
    what = "training and labels included" if sc.price_per_label > 0 else "training included"
    if q is None:
        return f"No break-even volume: {min((p, f), key=lambda o: o.total(sc)).name} is cheaper at any volume."
    low_q, high_q = sorted((p, f), key=lambda o: o.query_cost)
    if q < 1:
        return (f"{low_q.name} is cheaper than {high_q.name} from the first query (over {sc.months:g} months, "
                f"{what}).")
    return (f"Break-even {fmt_queries(q)} (over {sc.months:g} months, {what}): above it {low_q.name} "
            f"is cheaper, below it {high_q.name}.")


def cost_reasons(p: Option | None, f: Option | None, sc: Scenario, budget: float | None) -> list[str]:
    """Each option's total over the horizon, and the break-even sentence."""
    out = []
    for o in (p, f):
        if o is None:
            continue
        labels = f" + labels {fmt_usd(o.label_cost)}" if sc.price_per_label > 0 else ""
        out.append(f"Over {sc.months:g} months at {fmt_num(sc.queries_per_month)} queries a month, {o.name} costs "
                   f"{fmt_usd(o.total(sc))}: training {fmt_usd(o.train_cost)}{labels} x {trainings(sc):g}, "
                   f"{fmt_usd(o.query_cost * 1000)} per 1k queries; median latency {fmt_ms(o.latency)}"
                   + (f" (budget {fmt_ms(budget)})." if budget else "."))
    if p and f:
        out.append(break_even_sentence(p, f, sc))
    return out


def _pricing(o: Option, sc: Scenario) -> str:
    """How the option's queries are priced: per token (an API), or per hour of its hardware."""
    cell = o.best.cells[0]
    price = cell.token_price(sc)
    hardware = cell.query_info().get("hardware")
    device = f" ({hardware.get('device')})" if isinstance(hardware, dict) and hardware.get("device") else ""
    hourly = f"${cell.hour_price(sc):g}/hour{device} x measured seconds"
    if price is None:
        return hourly
    tokens = f"${price.input_per_mtok:g}/${price.output_per_mtok:g} per 1M tokens in/out"
    return f"{tokens} + {hourly} of the small model" if cell.query_info().get("hardware_seconds") else tokens


def arm_rows(arms: dict[str, Option | None], sc: Scenario, choice: str | None) -> list[dict[str, object]]:
    """Each arm's best option as a row of the report's options table (`Recommendation.options`)."""
    rows: list[dict[str, object]] = []
    for arm, o in arms.items():
        if o is None:
            continue
        low, high = o.interval
        cell = o.best.cells[0]
        rows.append({"arm": arm, "variant": o.name, "n_train": o.best.n_train, "labels": o.best.labels,
                     "mean": o.mean, "low": low, "high": high, "metric": o.metric, "usd_per_1k": o.query_cost * 1000,
                     "one_off": o.one_off, "total": o.total(sc),
                     "meets_target": None if sc.accuracy_target is None else o.mean >= sc.accuracy_target,
                     "chosen": o.name == choice, "model": (cell.extra.get("cell") or {}).get("model"),
                     "price": _pricing(o, sc)})
    return rows
