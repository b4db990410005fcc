"""Decide what to ship: a prompt, a fine-tune, or more labels, from measured results and a scenario.

`recommend(analysis, scenario)` decides from a run (basis "measured"); `prior_recommendation(scenario)`
answers without a run from published findings (basis "estimate", to be confirmed by a run).

Measured decision rules:

1. Candidates. Per family (prompt, fine-tune) the best variant (highest seed-mean at one training
   size, `analysis.best_of`) among the cells the scenario allows: ``n_train <= labels_available``
   (None: every size the run measured) and mean single-query latency ``<= latency_budget_s``. A budget
   that excludes every variant is ignored with a warning; no allowed cell at all -> "collect_labels"
   up to the fewest labels any measured variant used.
2. Target unmet. With an ``accuracy_target`` that no candidate's mean reaches, each fine-tune learning
   curve within the latency budget (every measured size, not only the allowed ones) gives the labels
   needed: the smallest measured size whose mean reaches the target, else the least-squares line of the
   seed means against ln n (when that line lands inside the measured range, which the data contradict,
   the slope of the last two points is used), extrapolated at most CURVE_CAP x the largest measured
   size. The fewest labels needed give "collect_labels" (cell_key: the best candidate, to ship
   meanwhile); if the labels on hand already suffice (a size beyond the run) -> "finetune" on all of
   them, flagged as projected. No projection -> the best candidate by quality, with a warning.
3. Otherwise. Total cost over ``months`` = train $ x (1 + task_changes_per_year x months / 12)
   + queries_per_month x months x query $ (measured seconds x hourly price; a task change re-pays any
   fit, prompt fits included). The quality gap is the analysis' paired bootstrap test when it compares
   these two cells, else whether their intervals (seed range widened to the cells' 95% bootstrap CI)
   overlap. The shipped cell (cell_key) is the chosen variant's best seed.
   * One family only, or only one meets the target -> that one.
   * Target set and both meet it -> the cheaper total wins (the target defines "good enough"); only
     totals within COST_TIE of each other let a significantly better one win.
   * No target: a significant gap of at least MIN_GAIN -> the better one, whatever it costs (set a
     target to let cost decide); significant but smaller -> the cheaper; not significant ->
     "too_close", choice = the cheaper total, stated as such.
4. would_change is computed by re-deciding under changed scenarios: the break-even volume, the
   task-change rate that tips the totals, a target both meet, latency budgets, and the labels where
   fine-tuning first matches the best prompt (`analysis.prompt_worth` crossover).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from adaptlab.analysis import best_of
from adaptlab.errors import DataError
from adaptlab.recommend.text import (Decision, Recommendation, a_an, decision_phrase, fmt_metric, fmt_ms, fmt_num, fmt_p,
                                     fmt_points, fmt_queries, fmt_usd, mean_of, round_up)
from adaptlab.results import CellRecord, Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis, Best, Curve

log = logging.getLogger(__name__)

MIN_GAIN = 0.01
"""Without a target, a significant gap smaller than this (1 point) is practically negligible."""
COST_TIE = 0.10
"""Totals within 10% of the dearer one count as equal cost (then quality decides)."""
CURVE_CAP = 10.0
"""A learning curve is extrapolated at most to this multiple of its largest measured size."""


@dataclass
class _Option:
    """A candidate (one family's best under the scenario) with its scenario costs."""

    best: Best
    metric: str
    train_cost: float
    query_cost: float
    latency: float
    cell_key: str
    """The best seed's cell (its artifact is what ships)."""

    @classmethod
    def of(cls, best: Best, sc: Scenario) -> _Option:
        cells = best.cells
        return cls(best, cells[0].metric, mean_of(c.train_cost(sc) for c in cells),
                   mean_of(c.query_cost(sc) for c in cells), mean_of(c.query_seconds for c in cells),
                   max(cells, key=lambda c: c.value).key)

    name = property(lambda self: self.best.variant)
    family = property(lambda self: self.best.family)
    mean = property(lambda self: self.best.mean)

    def total(self, sc: Scenario) -> float:
        trainings = 1 + sc.task_changes_per_year * sc.months / 12
        return self.train_cost * trainings + sc.queries_per_month * sc.months * self.query_cost

    @property
    def interval(self) -> tuple[float, float]:
        """The seed range widened to the cells' mean 95% bootstrap CI (test-sampling noise)."""
        b, ok = self.best, [c for c in self.best.cells if math.isfinite(c.ci_low) and math.isfinite(c.ci_high)]
        if not ok:
            return b.low, b.high
        return min(b.low, mean_of(c.ci_low for c in ok)), max(b.high, mean_of(c.ci_high for c in ok))

    def fmt(self, value: float) -> str:
        return fmt_metric(value, self.metric)

    def describe(self) -> str:
        (low, high), n = self.interval, len(self.best.cells)
        return (f"{self.name} ({self.best.n_train} labels) scores {self.fmt(self.mean)} {self.metric} "
                f"[{self.fmt(low)}, {self.fmt(high)}] ({n} seed{'s' if n > 1 else ''}; seed range and 95% bootstrap CI)")


class _Gap(NamedTuple):
    """Fine-tune minus prompt quality, whether the difference is established, and the sentence."""

    diff: float
    significant: bool
    text: str


def _latency_ok(cells: list[CellRecord], budget: float | None) -> list[CellRecord]:
    """Cells whose (variant, n_train) mean latency fits the budget."""
    groups: dict[tuple[str, int], list[CellRecord]] = {}
    for c in cells:
        groups.setdefault((c.variant, c.n_train), []).append(c)
    return [c for g in groups.values() if budget is None or mean_of(x.query_seconds for x in g) <= budget
            for c in g]


def _candidates(cells: list[CellRecord], sc: Scenario, labels: int | None,
                budget: float | None) -> dict[str, _Option | None]:
    allowed = _latency_ok(cells, budget)
    bests = {fam: best_of(allowed, fam, max_labels=labels) for fam in ("prompt", "finetune")}
    return {fam: _Option.of(b, sc) if b else None for fam, b in bests.items()}


def _gap(analysis: Analysis, p: _Option, f: _Option) -> _Gap:
    sig, bp, bf = analysis.significance, analysis.best_prompt, analysis.best_finetune
    same = bool(bp and bf) and (bp.variant, bp.n_train, bf.variant, bf.n_train) == (
        p.name, p.best.n_train, f.name, f.best.n_train)
    if sig is not None and same and {sig.a, sig.b} == {p.name, f.name}:
        s = 1.0 if sig.a == f.name else -1.0
        low, high = sorted((s * sig.low, s * sig.high))
        m = p.metric
        return _Gap(s * sig.diff, bool(sig.significant),
                    f"Fine-tuning minus prompting: {fmt_points(s * sig.diff, m)} points of {m} (paired bootstrap "
                    f"95% CI [{fmt_points(low, m)}, {fmt_points(high, m)}], {fmt_p(sig.p_value)}, n={sig.n}): "
                    f"{'significant' if sig.significant else 'not significant'}.")
    (pl, ph), (fl, fh) = p.interval, f.interval
    apart = ph < fl or fh < pl
    return _Gap(f.mean - p.mean, apart,
                f"Fine-tuning minus prompting: {fmt_points(f.mean - p.mean, p.metric)} points of {p.metric}; no paired "
                "test on these "
                f"two, and their intervals {'do not overlap' if apart else 'overlap'}: the difference is "
                f"{'clear' if apart else 'not established'}.")


def _decide(p: _Option | None, f: _Option | None, gap: _Gap | None,
            sc: Scenario) -> tuple[Decision, _Option, str]:
    """(decision, chosen, rule) when at least one candidate meets the target (rule 3)."""
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


# -- Learning-curve projection -----------------------------------------------------------------

def _labels_to_reach(curve: Curve, target: float, metric: str) -> tuple[float | None, bool, str]:
    """(labels the variant needs to reach ``target`` or None, measured?, how it was found)."""
    pts = sorted((p.n_train, p.mean) for p in curve.points if p.n_train > 0)
    for n, mean in pts:
        if mean >= target:
            return float(n), True, f"Measured: {curve.variant} reached {fmt_metric(mean, metric)} at {n} labels."
    if len(pts) < 2:
        return None, False, f"{curve.variant}: one measured size, no curve to extrapolate."
    xs, ys = [math.log(n) for n, _ in pts], [m for _, m in pts]
    mx, my = mean_of(xs), mean_of(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept, how = my - slope * mx, "least-squares fit of the seed means against ln n"
    n_max = pts[-1][0]
    if slope > 0 and (target - intercept) / slope <= xs[-1]:  # the line contradicts the data: local slope
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        intercept, how = ys[-1] - slope * xs[-1], "slope of the last two measured sizes"
    if slope <= 0:
        return None, False, f"{curve.variant}: the curve does not rise with more labels."
    n = math.exp(min((target - intercept) / slope, 300.0))
    if n > CURVE_CAP * n_max:
        return None, False, (f"{curve.variant}: the {how} would need about {fmt_num(round_up(n))} labels, "
                             f"beyond {CURVE_CAP:g}x the largest measured size ({n_max}); not projected.")
    return n, False, (f"Projected: {curve.variant} ({how}, {fmt_points(slope * math.log(2), metric)} points per "
                      f"doubling, {fmt_metric(ys[-1], metric)} at {n_max} labels) reaches {fmt_metric(target, metric)} "
                      f"at about {fmt_num(round_up(n))} labels.")


def _target_unmet(analysis: Analysis, cells: list[CellRecord], opts: dict[str, _Option | None],
                  sc: Scenario, labels: int, budget: float | None, reasons: list[str]) -> Recommendation:
    target = float(sc.accuracy_target)  # type: ignore[arg-type]
    fallback = max((o for o in opts.values() if o), key=lambda o: o.mean, default=None)
    metric = analysis.metric or "accuracy"
    goal = fmt_metric(target, metric)
    if fallback is not None:
        reasons.append(f"No candidate reaches the {metric} target {goal}: the best within {labels} labels, "
                       f"{fallback.describe()}.")
    fast = {c.variant for c in _latency_ok(cells, budget)}
    found = []
    for curve in analysis.curves:
        if curve.family == "finetune" and curve.variant in fast:
            n, measured, how = _labels_to_reach(curve, target, metric)
            reasons.append(how)
            n_max = max(p.n_train for p in curve.points)
            if n is not None and (n > labels or n_max < labels):
                found.append((n, measured, curve.variant, n_max))
    key = fallback.cell_key if fallback else None
    if found:
        n, measured, variant, n_max = min(found)
        need = int(n) if measured else round_up(n)
        if n <= labels:  # ship the variant's measured cell until it is retrained on every label
            ft = opts["finetune"]
            key = ft.cell_key if ft is not None and ft.name == variant else key
            return Recommendation("finetune", variant, key, f"Fine-tune {variant} on all {labels} labels: projected "
                                  f"to reach {goal} {metric} with about {need} (measured only up to {n_max}); "
                                  "confirm with a run.", reasons, [], "measured", need)
        more = need - labels if measured else round_up(n - labels)
        would = ([f"With {a_an(metric)} {metric} target at or below {fallback.fmt(fallback.mean)}, {fallback.name} meets it now."]
                 if fallback else [])
        return Recommendation("collect_labels", variant, key, f"Collect more labels: about {fmt_num(more)} more "
                              f"({fmt_num(need)} in all) are {'measured' if measured else 'projected'} to let {variant} "
                              f"reach {goal} {metric}.", reasons, would, "measured", need)
    assert fallback is not None  # recommend() returned earlier when no family has a candidate
    reasons.append("Warning: no measured or projected option reaches the target; shipping the best available.")
    return Recommendation(fallback.family, fallback.name, key,  # type: ignore[arg-type]
                          f"Ship {fallback.name} ({fallback.fmt(fallback.mean)} {metric}), but it misses the target "
                          f"{goal} and no learning curve projects reaching it.", reasons, [], "measured", None)


# -- recommend ---------------------------------------------------------------------------------

_WHY = {"only": "the only family with results within the scenario's limits (latency, labels)",
        "target": "the only option meeting the target",
        "quality": "clearly better quality, which outweighs cost here",
        "cost": "quality is sufficient for both, so the cheaper total cost decides"}


def recommend(analysis: Analysis, scenario: Scenario | None = None) -> Recommendation:
    """Decide from a run's analysis under ``scenario`` (default: the analysis' own); rules in the module doc."""
    sc = scenario if scenario is not None else analysis.scenario
    cells = [c.served(sc) for c in analysis.cells if c.ok]
    if not cells:
        raise DataError("the run has no finished cells to recommend from", hint="run `adaptlab compare`")
    labels = sc.labels_available if sc.labels_available is not None else max(c.n_train for c in cells)
    reasons: list[str] = []
    budget = sc.latency_budget_s
    opts = _candidates(cells, sc, labels, budget)
    if budget is not None and not any(opts.values()):
        fastest = min(cells, key=lambda c: c.query_seconds)
        reasons.append(f"Warning: no variant answers within the {fmt_ms(budget)} latency budget (the fastest, "
                       f"{fastest.variant}, takes {fmt_ms(fastest.query_seconds)}); the budget is ignored.")
        budget, opts = None, _candidates(cells, sc, labels, None)
    for fam, o in opts.items():
        free = best_of(cells, fam)  # type: ignore[arg-type]
        if free and (o is None or (free.variant, free.n_train) != (o.name, o.best.n_train)):
            lat = mean_of(c.query_seconds for c in free.cells)
            why = ([f"needs {free.n_train} labels (you have {labels})"] if free.n_train > labels else []) + (
                [f"takes {fmt_ms(lat)}, over the {fmt_ms(budget)} budget"] if budget is not None and lat > budget else [])
            reasons.append(f"Excluded: the best {'prompt' if fam == 'prompt' else 'fine-tune'} overall, "
                           f"{free.variant} at {free.n_train} labels ({fmt_metric(free.mean, free.cells[0].metric)}), "
                           f"{' and '.join(why)}.")
    p, f = opts["prompt"], opts["finetune"]
    if p is None and f is None:
        fewest = min(cells, key=lambda c: c.n_train)
        return Recommendation("collect_labels", fewest.variant, None, f"Collect labels: you have {labels}; the "
                              f"smallest measured option, {fewest.variant}, used {fewest.n_train}.", reasons, [],
                              "measured", fewest.n_train)
    target = sc.accuracy_target
    if target is not None and not any(o.mean >= target for o in (p, f) if o):
        return _target_unmet(analysis, cells, opts, sc, labels, budget, reasons)
    gap = _gap(analysis, p, f) if p and f else None
    decision, chosen, rule = _decide(p, f, gap, sc)
    reasons += [o.describe() + "." for o in (p, f) if o] + ([gap.text] if gap else [])
    if target is not None:
        met = " and ".join(o.name for o in (p, f) if o and o.mean >= target)
        reasons.append(f"Target {chosen.fmt(target)} {chosen.metric}: met by {met}.")
    reasons += _cost_reasons(p, f, sc, budget)
    if decision == "too_close":
        other = f if chosen is p else p
        assert other is not None
        headline = (f"Too close to call on quality: ship the cheaper option for this scenario, {chosen.name} "
                    f"({fmt_usd(chosen.total(sc))} vs {fmt_usd(other.total(sc))} over {sc.months:g} months).")
        reasons.append(f"The evidence is too weak to pick on quality; {chosen.name} is chosen only because it is "
                       "cheaper for this scenario.")
    else:
        headline = (f"{'Prompt' if decision == 'prompt' else 'Fine-tune'} with {chosen.name} "
                    f"({chosen.fmt(chosen.mean)} {chosen.metric}): {_WHY[rule]}.")
    rec = Recommendation(decision, chosen.name, chosen.cell_key, headline, reasons, [], "measured",
                         break_even=_break_even_sentence(p, f, sc) if p and f else None)
    rec.evidence = _evidence(cells, chosen, gap)
    if rec.evidence:
        rec.headline += f" {rec.evidence}"
    rec.would_change = _would_change(analysis, cells, sc, labels, p, f, gap, rec)
    log.info("recommend: %s %s (rule: %s)", decision, chosen.name, rule)
    return rec


def _trainings(sc: Scenario) -> float:
    return 1 + sc.task_changes_per_year * sc.months / 12


def _cost_reasons(p: _Option | None, f: _Option | None, sc: Scenario, budget: float | None) -> list[str]:
    out = [f"Over {sc.months:g} months at {fmt_num(sc.queries_per_month)} queries a month, {o.name} costs "
           f"{fmt_usd(o.total(sc))}: training {fmt_usd(o.train_cost)} x {_trainings(sc):g}, {fmt_usd(o.query_cost * 1000)} "
           f"per 1k queries; median latency {fmt_ms(o.latency)}" + (f" (budget {fmt_ms(budget)})." if budget else ".")
           for o in (p, f) if o]
    if p and f:
        out.append(_break_even_sentence(p, f, sc))
    return out


def _break_even_sentence(p: _Option, f: _Option, sc: Scenario) -> str:
    """The one break-even statement (the same in the terminal, summary.md and report.html)."""
    q = _break_even(p, f, sc)
    if q is None:
        return f"No break-even volume: {min((p, f), key=lambda o: o.total(sc)).name} is cheaper at any volume."
    low_q, high_q = sorted((p, f), key=lambda o: o.query_cost)
    if q < 1:
        return (f"{low_q.name} is cheaper than {high_q.name} from the first query (over {sc.months:g} months, "
                "training included).")
    return (f"Break-even {fmt_queries(q)} (over {sc.months:g} months, training included): above it {low_q.name} "
            f"is cheaper, below it {high_q.name}.")


MIN_TEST = 100
"""Fewer test examples than this make an interval wide: the recommendation says so."""


def _evidence(cells: list[CellRecord], chosen: _Option, gap: _Gap | None) -> str | None:
    """A plain statement of thin evidence (few test examples, one seed) and what would firm it up."""
    n_test = min((c.n_test for c in cells), default=0)
    seeds = len(chosen.best.cells)
    thin = []
    if n_test < MIN_TEST:
        thin.append(f"{n_test} test examples")
    if seeds == 1 and chosen.best.n_train > 0:
        thin.append("one seed")
    if not thin:
        return None
    fix = ([f"a test set of {MIN_TEST}+ examples (`limit`)"] if n_test < MIN_TEST else []) + (
        ["more seeds (`seeds: [0, 1, 2]`)"] if "one seed" in thin else [])
    return f"This rests on {' and '.join(thin)} only; firm it up with {' and '.join(fix)}."


def _break_even(p: _Option, f: _Option, sc: Scenario) -> float | None:
    """Queries per month at which the two totals are equal (None: they never cross)."""
    dq, dt = p.query_cost - f.query_cost, (f.train_cost - p.train_cost) * _trainings(sc)
    return dt / (dq * sc.months) if sc.months > 0 and dq != 0 and dt / dq > 0 else None


def _would_change(analysis: Analysis, cells: list[CellRecord], sc: Scenario, labels: int, p: _Option | None,
                  f: _Option | None, gap: _Gap | None, rec: Recommendation) -> list[str]:
    out: list[str] = []

    def flip(**changes: Any) -> str | None:
        """'the decision would be X (ship Y)' if the changed scenario decides otherwise."""
        d, o, _ = _decide(p, f, gap, sc.replace(**changes))
        return None if (d, o.name) == (rec.decision, rec.choice) else decision_phrase(d, o.name)

    if p and f:
        q = _break_even(p, f, sc)
        side = q is not None and (sc.queries_per_month > q)
        if q is not None and q >= 1 and (what := flip(queries_per_month=q * (0.95 if side else 1.05))):
            out.append(f"{'Below' if side else 'Above'} {fmt_num(q)} queries a month the totals reverse: {what}.")
        dq, dt = sc.queries_per_month * sc.months * (p.query_cost - f.query_cost), f.train_cost - p.train_cost
        rate = (dq / dt - 1) * 12 / sc.months if dt > 0 and dq > 0 and sc.months > 0 else -1.0
        more = sc.task_changes_per_year < rate
        if rate > 0 and (what := flip(task_changes_per_year=rate * (1.05 if more else 0.95))):
            out.append(f"If the task changed {'more' if more else 'fewer'} than {rate:.3g} times a year (each change "
                       f"re-trains): {what}.")
        low = min(p.mean, f.mean)
        if (sc.accuracy_target is None or sc.accuracy_target > low) and (what := flip(accuracy_target=low)):
            out.append(f"With {a_an(p.metric)} {p.metric} target at or below {p.fmt(low)} (both meet it), cost decides: "
                       f"{what}.")
    if any(((c.extra.get("cost") or {}).get("query") or {}).get("latency_p50_warm_s") for c in cells):
        alt = sc.replace(prefix_cache=not sc.prefix_cache)
        o2 = _candidates([c.served(alt) for c in cells], alt, labels, sc.latency_budget_s)
        if o2["prompt"] or o2["finetune"]:
            g2 = _gap(analysis, o2["prompt"], o2["finetune"]) if o2["prompt"] and o2["finetune"] else None
            d, o, _ = _decide(o2["prompt"], o2["finetune"], g2, alt)
            if (d, o.name) != (rec.decision, rec.choice):
                out.append(f"{'With' if alt.prefix_cache else 'Without'} a serving engine that keeps prompt prefixes "
                           f"between queries (vLLM, llama.cpp; `prefix_cache: {str(alt.prefix_cache).lower()}` in the "
                           f"scenario): {decision_phrase(d, o.name)}.")
    chosen = p if p and p.name == rec.choice else f
    if chosen and chosen.latency > 0:
        out.append(f"A latency budget below {fmt_ms(chosen.latency)} rules out {chosen.name}.")
    if sc.latency_budget_s is not None:
        for fam, o in _candidates(cells, sc, labels, None).items():
            held = p if fam == "prompt" else f
            if o and (held is None or o.mean > held.mean) and o.latency > sc.latency_budget_s:
                out.append(f"A latency budget of {fmt_ms(o.latency)} would admit {o.name} ({o.fmt(o.mean)}).")
    crossed = [(cr.n, cr) for cr in analysis.crossovers if cr.n is not None and cr.n > 0]
    mine = [(n, cr) for n, cr in crossed if f is not None and cr.variant == f.name]
    later = [(n, cr) for n, cr in crossed if n > labels]
    if rec.decision == "finetune" and mine:
        n, cr = mine[0]
        out.append(f"With fewer than {fmt_num(round_up(n))} labels, fine-tuning ({cr.variant}) does not yet match "
                   f"the best prompt ({fmt_metric(cr.target_value, f.metric)}).")
    elif rec.decision != "finetune" and later:
        n, cr = min(later, key=lambda t: t[0])
        out.append(f"With about {fmt_num(round_up(n))} labels, fine-tuning ({cr.variant}) matches the best prompt "
                   f"({fmt_metric(cr.target_value, cells[0].metric)}).")
    return out
