"""What would change a measured decision: re-deciding under changed scenarios (volume, task changes, a target both
meet, an API's token price, prefix cache, latency budgets) and the labels where fine-tuning matches the best prompt. Every statement
about labels stays inside the measured sizes (the crossover is interpolated between measured points, never
extrapolated; a match at the smallest size says that fewer were not measured). Label counts are labels used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adaptlab.recommend.options import Gap, Option, break_even_volume, candidates, decide_rule, quality_gap
from adaptlab.recommend.text import Recommendation, a_an, decision_phrase, fmt_metric, fmt_ms, fmt_num, round_up
from adaptlab.models.prices import TokenPrice
from adaptlab.results import CellRecord, Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis


def _cost_flips(p: Option, f: Option, gap: Gap | None, sc: Scenario, rec: Recommendation) -> list[str]:
    out: list[str] = []

    def flip(**changes: Any) -> str | None:
        """'you would X with Y' if the changed scenario decides otherwise."""
        d, o, _ = decide_rule(p, f, gap, sc.replace(**changes))
        return None if (d, o.name) == (rec.decision, rec.choice) else decision_phrase(d, o.name)

    q = break_even_volume(p, f, sc)
    side = q is not None and (sc.queries_per_month > q)
    if q is not None and q >= 1 and (what := flip(queries_per_month=q * (0.95 if side else 1.05))):
        out.append(f"{'Below' if side else 'Above'} {fmt_num(q)} queries a month the totals reverse: {what}.")
    dq, dt = sc.queries_per_month * sc.months * (p.query_cost - f.query_cost), f.one_off - p.one_off
    rate = (dq / dt - 1) * 12 / sc.months if dt > 0 and dq > 0 and sc.months > 0 else -1.0
    more = sc.task_changes_per_year < rate
    if rate > 0 and (what := flip(task_changes_per_year=rate * (1.05 if more else 0.95))):
        out.append(f"If the task changed {'more' if more else 'fewer'} than {rate:.3g} times a year (each change "
                   f"re-trains and re-labels): {what}.")
    low = min(p.mean, f.mean)
    if (sc.accuracy_target is None or sc.accuracy_target > low) and (what := flip(accuracy_target=low)):
        out.append(f"With {a_an(p.metric)} {p.metric} target at or below {p.fmt(low)} (both meet it), cost decides: "
                   f"{what}.")
    return out


_MULTIPLIERS = (0.5, 2.0, 0.25, 4.0, 0.1, 10.0, 0.01, 100.0)
"""Token-price changes tried, nearest first."""


def _token_flip(p: Option, f: Option, gap: Gap | None, sc: Scenario, rec: Recommendation) -> list[str]:
    """The nearest change of the API's token price (x0.01..x100) that changes the decision, when an option is
    priced per token."""
    priced = [o.best.cells[0].token_price(sc) for o in (p, f)]
    base = next((t for t in priced if t is not None), None)
    if base is None:
        return []
    for m in _MULTIPLIERS:
        price = TokenPrice(input_per_mtok=base.input_per_mtok * m, output_per_mtok=base.output_per_mtok * m)
        alt = sc.replace(token_price=price)
        d, o, _ = decide_rule(Option.of(p.best, alt, p.band), Option.of(f.best, alt, f.band), gap, alt)
        if (d, o.name) != (rec.decision, rec.choice):
            return [f"At {m:g}x the API's token price (${price.input_per_mtok:.3g} in / ${price.output_per_mtok:.3g} "
                    f"out per 1M tokens): {decision_phrase(d, o.name)}."]
    return [f"Token prices from 0.01x to 100x today's (${base.input_per_mtok:.3g} in / ${base.output_per_mtok:.3g} "
            "out per 1M tokens) leave the decision as it is."]


def _labels_flip(analysis: Analysis, cells: list[CellRecord], sc: Scenario, rec: Recommendation,
                 chosen: Option | None) -> list[str]:
    """The decision with fewer labels on hand: the most any other measured cell used below the chosen option's."""
    if chosen is None or rec.decision not in ("prompt", "finetune"):
        return []
    fewer = [c.labels for c in cells if c.labels < chosen.best.labels]
    if not fewer:
        return []
    have = float(max(fewer))
    opts = candidates(cells, sc, have, sc.latency_budget_s, analysis)
    p2, f2 = opts["prompt"], opts["finetune"]
    if not (p2 or f2):
        return []
    target = sc.accuracy_target
    if target is not None and not any(o.mean >= target for o in (p2, f2) if o):
        best = max((o for o in (p2, f2) if o), key=lambda o: o.mean)
        return [f"With {fmt_num(have)} labels on hand, no measured option meets the {best.fmt(target)} target "
                f"(the best, {best.name}, scores {best.fmt(best.mean)}): you would collect labels."]
    d, o, _ = decide_rule(p2, f2, quality_gap(analysis, p2, f2) if p2 and f2 else None, sc)
    if (d, o.name) == (rec.decision, rec.choice):
        return []
    return [f"With {fmt_num(have)} labels on hand (fewer than the {fmt_num(chosen.best.labels)} {chosen.name} "
            f"used): {decision_phrase(d, o.name)} ({o.fmt(o.mean)})."]


def _prefix_flip(analysis: Analysis, cells: list[CellRecord], sc: Scenario, labels: float,
                 rec: Recommendation) -> list[str]:
    if not any(c.query_info().get("latency_p50_warm_s") for c in cells):
        return []
    alt = sc.replace(prefix_cache=not sc.prefix_cache)
    o2 = candidates([c.served(alt) for c in cells], alt, labels, sc.latency_budget_s, analysis)
    p2, f2 = o2["prompt"], o2["finetune"]
    if not (p2 or f2):
        return []
    d, o, _ = decide_rule(p2, f2, quality_gap(analysis, p2, f2) if p2 and f2 else None, alt)
    if (d, o.name) == (rec.decision, rec.choice):
        return []
    return [f"{'With' if alt.prefix_cache else 'Without'} a serving engine that keeps prompt prefixes between queries "
            f"(vLLM, llama.cpp; `prefix_cache: {str(alt.prefix_cache).lower()}` in the scenario): "
            f"{decision_phrase(d, o.name)}."]


def _latency(cells: list[CellRecord], sc: Scenario, labels: float, p: Option | None, f: Option | None,
             rec: Recommendation) -> list[str]:
    out = []
    chosen = p if p and p.name == rec.choice else f
    if chosen and chosen.latency_low > 0:
        out.append(f"A latency budget below {fmt_ms(chosen.latency_low)} rules out {chosen.name} (every seed's "
                   "95% latency interval would lie above it).")
    if sc.latency_budget_s is not None:
        for fam, o in candidates(cells, sc, labels, None).items():
            held = p if fam == "prompt" else f
            if o and (held is None or o.mean > held.mean) and o.latency_low > sc.latency_budget_s:
                out.append(f"A latency budget of {fmt_ms(o.latency_low)} would admit {o.name} ({o.fmt(o.mean)}).")
    return out


def _crossovers(analysis: Analysis, labels: float, f: Option | None, rec: Recommendation) -> list[str]:
    """The labels used at which fine-tuning matches the best prompt, only where the run measured it."""
    smallest = {c.variant: min(p.labels for p in c.points) for c in analysis.curves}
    crossed = [(cr.labels, cr) for cr in analysis.crossovers if cr.labels is not None and cr.labels > 0]
    metric = analysis.metric or (f.metric if f else "accuracy")
    if rec.decision == "finetune" and f is not None:
        mine = [(n, cr) for n, cr in crossed if cr.variant == f.name]
        if mine:
            n, cr = mine[0]
            value = fmt_metric(cr.target_value, metric)
            if n > smallest.get(cr.variant, 0) + 0.5:
                return [f"With fewer than {fmt_num(round_up(n))} labels, fine-tuning ({cr.variant}) does not yet "
                        f"match the best prompt ({value})."]
            return [f"Fine-tuning ({cr.variant}) matched the best prompt ({value}) at the smallest size measured "
                    f"({fmt_num(n)} labels); fewer were not measured."]
        return []
    later = [(n, cr) for n, cr in crossed if n > labels]
    if later:
        n, cr = min(later, key=lambda t: t[0])
        return [f"With about {fmt_num(round_up(n))} labels, fine-tuning ({cr.variant}) matches the best prompt "
                f"({fmt_metric(cr.target_value, metric)})."]
    return []


def would_change(analysis: Analysis, cells: list[CellRecord], sc: Scenario, labels: float,
                 pair: tuple[Option | None, Option | None], gap: Gap | None, rec: Recommendation) -> list[str]:
    """The scenario changes (and label counts) that would change ``rec``, each in a sentence."""
    p, f = pair
    out = _cost_flips(p, f, gap, sc, rec) + _token_flip(p, f, gap, sc, rec) if p and f else []
    chosen = next((o for o in (p, f) if o and o.name == rec.choice), None)
    out += _labels_flip(analysis, cells, sc, rec, chosen)
    out += _prefix_flip(analysis, cells, sc, labels, rec)
    out += _latency(cells, sc, labels, p, f, rec)
    return out + _crossovers(analysis, labels, f, rec)
