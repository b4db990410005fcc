"""Decide what to ship: a prompt, a fine-tune, or more labels, from measured results and a scenario.

`recommend(analysis, scenario)` decides from a run (basis "measured"); `prior_recommendation(scenario)`
answers without a run from published findings (basis "estimate", to be confirmed by a run).

Measured decision rules (label counts are labels used: training + dev labels a cell read):

1. Candidates. Per arm (prompt; fine-tune, distil, cascade: the tuned arms) the best variant (highest seed-mean at one training
   size, `analysis.best_of`) among the cells the scenario allows: labels used ``<= labels_available``
   (None: every size the run measured) and a latency interval whose low end is within ``latency_budget_s``
   (`adaptlab.recommend.options`: a variant is excluded only when every seed's interval lies above the
   budget; one that straddles it stays, with a warning). Variants the analysis flags (at or below the
   majority baseline, or one class predicted for every example) are left out while any unflagged one
   remains. A budget that excludes every variant is ignored with a warning; no allowed cell at all ->
   "collect_labels" up to the fewest labels any measured variant used. The tuned arms' bests are weighed
   against each other first, pairwise by rule 3 (`adaptlab.recommend.options.tuned_champion`); the winner
   is "the fine-tune" below, and the decision's headline names its arm (fine-tune, distil, cascade).
2. Target unmet. With an ``accuracy_target`` that no candidate's mean reaches, each fine-tune learning
   curve within the latency budget gives the labels needed (`adaptlab.recommend.projection`: measured
   sizes first, then a saturating fit with a 90% interval, refused beyond 4x the largest measured size).
3. Otherwise. Total cost over ``months`` = (training $ + labels $) x (1 + task_changes_per_year x months / 12)
   + queries_per_month x months x query $ (`CellRecord.query_cost`: batched throughput or API tokens). The
   quality gap is a hierarchical paired bootstrap of the two candidates (the analysis' own when it compares
   them) when their predictions allow, else whether their intervals overlap. The shipped cell (cell_key)
   is the chosen variant's best seed.
   * One family only, or only one meets the target -> that one.
   * Target set and both meet it -> the cheaper total wins (the target defines "good enough"); only
     totals within COST_TIE of each other let a significantly better one win.
   * No target: a significant gap of at least MIN_GAIN -> the better one, whatever it costs (set a
     target to let cost decide); significant but smaller -> the cheaper; not significant ->
     "too_close", choice = the cheaper total, stated as such.
4. Stability (`adaptlab.recommend.stability`): the decision is re-run on bootstrap replicates of the two
   candidates (seeds and test examples resampled, paired); held in fewer than STABLE of them -> "too_close",
   naming both options, choice = the cheaper of those meeting the target.
5. would_change (`adaptlab.recommend.would`) re-decides under changed scenarios and states the labels where
   fine-tuning matches the best prompt, inside the measured sizes only.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from adaptlab.analysis import best_of, cost_assumptions
from adaptlab.analysis.costs import usd
from adaptlab.errors import DataError
from adaptlab.recommend.options import (COST_TIE, MIN_GAIN, Gap, Option, arm_candidates, arm_rows, break_even_sentence,
                                        cost_reasons, decide_rule, labels_phrase, latency_ok, quality_gap,
                                        tuned_champion)
from adaptlab.recommend.projection import PROJECTION_FACTOR, count, target_unmet
from adaptlab.recommend.stability import STABLE, decision_stability
from adaptlab.recommend.text import ARM_VERBS, Recommendation, decision_phrase, fmt_metric, fmt_ms, fmt_usd
from adaptlab.recommend.would import would_change
from adaptlab.results import CellRecord, Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis

__all__ = ["COST_TIE", "MIN_GAIN", "MIN_TEST", "PROJECTION_FACTOR", "STABLE", "recommend"]

log = logging.getLogger(__name__)

_WHY = {"only": "the only family with results within the scenario's limits (latency, labels, baseline)",
        "target": "of the best prompt and the best fine-tune, the only one meeting the target",
        "quality": "clearly better quality, which outweighs cost here",
        "cost": "quality is sufficient for both, so the cheaper total cost decides"}


def _unflagged(analysis: Analysis, cells: list[CellRecord]) -> tuple[list[CellRecord], list[str]]:
    """The cells of unflagged variants (all cells, with a warning, when every variant is flagged)."""
    keep = [c for c in cells if analysis.flag(c.variant, c.n_train) is None]
    if keep or not cells or analysis.baseline is None:
        return (keep or cells), []
    b = analysis.baseline
    return cells, [f"Warning: every variant is at or below the majority baseline ({fmt_metric(b.value, b.metric)}, "
                   f"always '{b.label}') or predicts one class; the recommendation is among them."]


def _flag_reasons(analysis: Analysis, cells: list[CellRecord], pool: list[CellRecord], labels: float,
                  budget: float | None) -> list[str]:
    """A sentence for each family's best candidate that was left out for being flagged."""
    if pool is cells or analysis.baseline is None:
        return []
    allowed = latency_ok(cells, budget)
    out = []
    for fam in ("prompt", "finetune"):
        best = best_of(allowed, fam, max_labels=labels)  # type: ignore[arg-type]
        flag = analysis.flag(best.variant, best.n_train) if best else None
        if best and flag:
            out.append(f"Flagged, not recommended: {best.variant} ({labels_phrase(best)}, "
                       f"{fmt_metric(best.mean, analysis.baseline.metric)}) {' and '.join(flag.why)}.")
    return out


def _excluded(cells: list[CellRecord], opts: dict[str, Option | None], labels: float,
              budget: float | None) -> list[str]:
    out = []
    for fam, o in opts.items():
        free = best_of(cells, fam)  # type: ignore[arg-type]
        if free and (o is None or (free.variant, free.n_train) != (o.name, o.best.n_train)):
            low = min(c.latency_interval()[0] for c in free.cells)
            used = max(c.labels for c in free.cells)
            why = ([f"used {count(used)} labels (you have {count(labels)})"] if used > labels else []) + (
                [f"every seed's latency interval lies over the {fmt_ms(budget)} budget (lowest {fmt_ms(low)})"]
                if budget is not None and low > budget else [])
            if why:
                out.append(f"Excluded: the best {'prompt' if fam == 'prompt' else 'fine-tune'} overall, "
                           f"{free.variant} at {labels_phrase(free)} ({fmt_metric(free.mean, free.cells[0].metric)}), "
                           f"{' and '.join(why)}.")
    return out


def _assumptions_brief(sc: Scenario, cells: list[CellRecord]) -> str:
    train = "" if sc.train_price_per_hour is None else f" (training {usd(sc.train_price_per_hour)}/hour)"
    api = "; API models priced per reported token" if any(c.token_price(sc) for c in cells) else ""
    return (f"Costs assume {usd(sc.price_per_hour)}/hour{train}, {sc.serving} serving, prefix cache "
            f"{'on' if sc.prefix_cache else 'off'}, {usd(sc.price_per_label)} per label, {sc.months:g} months at "
            f"{sc.queries_per_month:,.0f} queries a month, {sc.task_changes_per_year:g} task changes a year{api}.")


def recommend(analysis: Analysis, scenario: Scenario | None = None) -> Recommendation:
    """Decide from a run's analysis under ``scenario`` (default: the analysis' own); rules in the module doc."""
    sc = scenario if scenario is not None else analysis.scenario
    cells = [c.served(sc) for c in analysis.cells if c.ok]
    if not cells:
        raise DataError("the run has no finished cells to recommend from", hint="run `adaptlab compare`")
    labels = float(sc.labels_available if sc.labels_available is not None else max(c.labels for c in cells))
    pool, reasons = _unflagged(analysis, cells)
    budget = sc.latency_budget_s
    arms = arm_candidates(pool, sc, labels, budget, analysis)
    if budget is not None and not any(arms.values()):
        fastest = min(pool, key=lambda c: c.latency_interval()[0])
        reasons.append(f"Warning: no variant answers within the {fmt_ms(budget)} latency budget (the fastest, "
                       f"{fastest.variant}, takes {fmt_ms(fastest.query_seconds)}); the budget is ignored.")
        budget, arms = None, arm_candidates(pool, sc, labels, None, analysis)
    opts = {"prompt": arms["prompt"], "finetune": tuned_champion(arms, sc, analysis)}
    reasons += _excluded(pool, opts, labels, budget) + _flag_reasons(analysis, cells, pool, labels, budget)
    p, f = opts["prompt"], opts["finetune"]
    if p is None and f is None:
        fewest = min(pool, key=lambda c: c.labels)
        return _finish(Recommendation("collect_labels", fewest.variant, None, f"Collect labels: you have "
                                      f"{count(labels)}; the smallest measured option, {fewest.variant}, used "
                                      f"{count(fewest.labels)}.", reasons, [], "measured", math.ceil(fewest.labels)),
                       analysis, cells, sc)
    target = sc.accuracy_target
    if target is not None and not any(o.mean >= target for o in (p, f) if o):
        # the learning curves take every measured point, flagged ones too
        return _finish(target_unmet(analysis, cells, opts, sc, labels, budget, reasons), analysis, cells, sc)
    gap = quality_gap(analysis, p, f) if p and f else None
    decision, chosen, rule = decide_rule(p, f, gap, sc)
    reasons += [o.describe() + "." for o in (p, f) if o] + ([gap.text] if gap else [])
    if target is not None:
        met = " and ".join(o.name for o in (p, f) if o and o.mean >= target)
        reasons.append(f"Target {chosen.fmt(target)} {chosen.metric}: met by {met}.")
    reasons += cost_reasons(p, f, sc, budget) + [w for o in (p, f) if o and (w := o.latency_warning(budget))]
    reasons.append(_assumptions_brief(sc, cells))
    stab = decision_stability(analysis, p, f, gap, sc, (decision, chosen.name)) if p and f and gap else None
    if stab is not None:
        reasons.append(stab.sentence())
    unstable = stab is not None and not stab.stable and decision != "too_close"
    rec = _headline(p, f, gap, sc, (decision, chosen, rule), unstable)
    rec.reasons = reasons + rec.reasons
    if stab is not None:
        rec.stability, rec.stability_replicates = stab.share, stab.replicates
    rec.evidence = _evidence(cells, next(o for o in (p, f) if o and o.name == rec.choice))
    if rec.evidence:
        rec.headline += f" {rec.evidence}"
    rec.would_change = would_change(analysis, pool, sc, labels, (p, f), gap, rec)
    # every arm's best as measured (flagged ones too: the table shows what each option scored)
    rec.options = arm_rows(arm_candidates(cells, sc, labels, budget, analysis), sc, rec.choice)
    log.info("recommend: %s %s (rule: %s)", rec.decision, rec.choice, rule)
    return _finish(rec, analysis, cells, sc)


def _finish(rec: Recommendation, analysis: Analysis, cells: list[CellRecord], sc: Scenario) -> Recommendation:
    """``rec`` with the cost assumptions and the flagged variants filled in."""
    rec.assumptions = cost_assumptions(cells, sc)
    rec.flagged = [f"{fl.variant} at n={fl.n_train}: {' and '.join(fl.why)}"
                   for fl in (analysis.baseline.flagged if analysis.baseline else [])]
    return rec


def _headline(p: Option | None, f: Option | None, gap: Gap | None, sc: Scenario,
              decided: tuple[str, Option, str], unstable: bool) -> Recommendation:
    """The recommendation's decision, choice and headline (and the too-close reason)."""
    decision, chosen, rule = decided
    be = break_even_sentence(p, f, sc) if p and f else None
    if decision == "too_close" or unstable:
        assert p is not None and f is not None
        target = sc.accuracy_target
        meets = [o for o in (p, f) if target is None or o.mean >= target] or [p, f]
        pick = min(meets, key=lambda o: o.total(sc)) if unstable else chosen
        other = f if pick is p else p
        because = ("the only one meeting the target on the measured means" if len(meets) == 1
                   else "the cheaper for this scenario")
        costs = f"{fmt_usd(pick.total(sc))} vs {fmt_usd(other.total(sc))} over {sc.months:g} months"
        if unstable:
            head = (f"Too close to call between {p.name} and {f.name}: the rule's pick "
                    f"({decision_phrase(decision, chosen.name).removeprefix('you would ')}) does not hold up under "
                    f"resampling; ship {pick.name}, {because} ({costs}).")
            why = f"The evidence is too weak to settle the decision; {pick.name} is shipped as {because}."
        else:
            head = (f"Too close to call on quality between {p.name} and {f.name}: ship the cheaper option for this "
                    f"scenario, {pick.name} ({costs}).")
            why = (f"The evidence is too weak to pick on quality; {pick.name} is chosen only because it is cheaper "
                   "for this scenario.")
        return Recommendation("too_close", pick.name, pick.cell_key, head, [why], [], "measured", break_even=be,
                              alternative=other.name)
    head = (f"{ARM_VERBS.get(chosen.best.cells[0].arm, 'Fine-tune')} with {chosen.name} "
            f"({chosen.fmt(chosen.mean)} {chosen.metric}): {_WHY[rule]}.")
    return Recommendation(decision, chosen.name, chosen.cell_key, head, [], [], "measured",  # type: ignore[arg-type]
                          break_even=be)


MIN_TEST = 100
"""Fewer test examples than this make an interval wide: the recommendation says so."""


def _evidence(cells: list[CellRecord], chosen: Option) -> str | None:
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
