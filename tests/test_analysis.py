"""adaptlab.analysis on hand-made cells with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlab.analysis import (Best, analyze, best_of, break_even, compare_best, crossing,
                               cumulative_cost_curve, learning_curves, paired_significance,
                               prompt_worth, queries_to_break_even, representative, sensitivity)
from adaptlab.errors import ConfigError
from adaptlab.results import CellRecord, PredictionRow, Scenario


def cell(variant: str, strategy: str, n: int, seed: int, value: float, **kw) -> CellRecord:
    return CellRecord(key=f"{variant}|{n}|{seed}", strategy=strategy, options=kw.pop("options", {}),
                      n_train=n, seed=seed, variant=variant, value=value, **kw)


def ft_curve(points: dict[int, list[float]], variant: str = "lora r=8", **kw) -> list[CellRecord]:
    return [cell(variant, "lora", n, s, v, **kw)
            for n, vals in points.items() for s, v in enumerate(vals)]


def prompt_cells(value: float, variant: str = "few_shot k=8", n: int = 8, seeds: int = 3,
                 **kw) -> list[CellRecord]:
    return [cell(variant, "few_shot", n, s, value, **kw) for s in range(seeds)]


# -- learning curves ---------------------------------------------------------------------------

def test_learning_curves_mean_spread_and_failed_cells_ignored():
    cells = ft_curve({16: [0.5, 0.6, 0.7], 64: [0.8, 0.8]})
    cells += [cell("lora r=8", "lora", 256, 0, float("nan"), status="failed", error="OOM")]
    cells += prompt_cells(0.7, seeds=1) + [cell("zero_shot", "zero_shot", 0, 0, 0.55)]
    curves = learning_curves(cells)
    assert [c.variant for c in curves] == ["few_shot k=8", "zero_shot", "lora r=8"]
    assert [c.family for c in curves] == ["prompt", "prompt", "finetune"]
    lora = curves[2]
    assert [p.n_train for p in lora.points] == [16, 64]  # the failed n=256 cell is gone
    p16 = lora.points[0]
    assert p16.mean == pytest.approx(0.6) and p16.std == pytest.approx(0.1)  # sample std
    assert p16.labels == 16  # labels used: n_train when the cells did not record them
    assert (p16.low, p16.high, p16.n_seeds) == (0.5, 0.7, 3)
    assert lora.points[1].std == 0.0
    assert [p.n_train for p in curves[0].points] == [8] and curves[1].points[0].n_train == 0
    assert curves[0].points[0].std == 0.0  # one seed


# -- best_of -----------------------------------------------------------------------------------

def test_best_of_highest_mean_label_limit_and_ties():
    cells = ft_curve({16: [0.6, 0.62], 256: [0.9, 0.88]}) + ft_curve({16: [0.7, 0.72]}, "ia3")
    best = best_of(cells, "finetune")
    assert (best.variant, best.n_train, best.family) == ("lora r=8", 256, "finetune")
    assert best.mean == pytest.approx(0.89) and (best.low, best.high) == (0.88, 0.9)
    assert sorted(c.seed for c in best.cells) == [0, 1]
    limited = best_of(cells, "finetune", max_labels=64)
    assert (limited.variant, limited.n_train) == ("ia3", 16)
    assert best_of(cells, "finetune", max_labels=8) is None
    assert best_of(cells, "prompt") is None
    slow = prompt_cells(0.8, "few_shot k=8 slow", query_seconds=0.5)
    fast = prompt_cells(0.8, "few_shot k=8 fast", query_seconds=0.1)
    assert best_of(slow + fast + cells, "prompt").variant == "few_shot k=8 fast"
    assert best_of(fast + slow, "prompt").variant == "few_shot k=8 fast"


# -- what a prompt is worth --------------------------------------------------------------------

def test_prompt_worth_log_interpolation_known_answer():
    ft = ft_curve({16: [0.58, 0.62], 64: [0.66, 0.74], 256: [0.78, 0.82]})  # means .60 .70 .80
    (c,) = prompt_worth(ft + prompt_cells(0.75))
    assert c.variant == "lora r=8" and c.target == "few_shot k=8" and c.target_value == 0.75
    assert c.n == pytest.approx(128.0, rel=1e-12)  # exp(log 64 + 0.5 (log 256 - log 64))
    # optimistic = max-over-seeds curve .62 .74 .82; pessimistic = min curve .58 .66 .78
    assert c.n_low == pytest.approx(64 * 4 ** (0.01 / 0.08))
    assert c.n_high == pytest.approx(64 * 4 ** (0.09 / 0.12))
    assert 64 < c.n_low < c.n < c.n_high < 256
    assert "128" in c.note and "few_shot k=8" in c.note
    assert c.labels == pytest.approx(c.n) and (c.labels_low, c.labels_high) == pytest.approx((c.n_low, c.n_high))
    assert c.target_labels == 8


def test_prompt_worth_never_and_from_the_start():
    never = ft_curve({16: [0.5], 64: [0.6], 256: [0.7]}, "lora never")
    early = ft_curve({16: [0.8, 0.9], 64: [0.95, 0.95]}, "full early")
    cells = never + early + prompt_cells(0.75)
    by = {c.variant: c for c in prompt_worth(cells)}
    assert by["lora never"].n is None and by["lora never"].n_low is None
    assert by["lora never"].note == "does not reach few_shot k=8 (0.75) by n=256"
    assert by["full early"].n == 16 and by["full early"].n_low == 16 and by["full early"].n_high == 16
    assert "matches from the smallest size" in by["full early"].note
    assert prompt_worth(never) == []  # no prompt to match


def test_crossing_from_n_zero_is_linear_in_n():
    assert crossing([0, 100], [0.5, 1.0], 0.75)[0] == pytest.approx(50.0)
    assert crossing([0, 100], [0.8, 1.0], 0.75)[0] == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 100_000), min_size=1, max_size=8, unique=True),
       st.lists(st.floats(0, 1), min_size=8, max_size=8),
       st.lists(st.floats(0, 0.2), min_size=8, max_size=8), st.floats(0, 1))
def test_crossing_lies_between_bracketing_sizes(ns, values, widths, target):
    """The crossing is where the curve reaches the target and stays there up to the largest size."""
    ns = sorted(ns)
    values = values[:len(ns)]
    n, _ = crossing(ns, values, target)
    last_below = max((i for i, v in enumerate(values) if v < target), default=None)  # stays above after it
    if last_below == len(ns) - 1:
        assert n is None
        return
    if last_below is None:
        assert n == ns[0]
    else:
        assert ns[last_below] <= n <= ns[last_below + 1] * (1 + 1e-12)
    # a curve above everywhere crosses no later, one below no earlier
    high = [v + w for v, w in zip(values, widths)]
    low = [v - w for v, w in zip(values, widths)]
    n_low, _ = crossing(ns, high, target)
    n_high, _ = crossing(ns, low, target)
    assert n_low is not None and n_low <= n * (1 + 1e-9)
    assert n_high is None or n_high >= n * (1 - 1e-9)


# -- break-even --------------------------------------------------------------------------------

SCEN = Scenario(price_per_hour=3.6)  # 1 second = $0.001


def best_from(cells: list[CellRecord], family: str) -> Best:
    best = best_of(cells, family)
    assert best is not None
    return best


def test_break_even_known_answer_in_dollars_seconds_flops():
    prompt = best_from(prompt_cells(0.8, query_seconds=0.1, query_flops=1e9), "prompt")
    ft = best_from(ft_curve({64: [0.85, 0.85]}, query_seconds=0.02, query_flops=2e8,
                            train_seconds=8000.0, train_flops=8e13), "finetune")
    be = break_even(prompt, ft, SCEN)
    assert be.prompt_query_dollars == pytest.approx(1e-4)
    assert be.finetune_query_dollars == pytest.approx(2e-5)
    assert be.train_dollars == pytest.approx(8.0)
    assert be.queries_dollars == pytest.approx(100_000)
    assert be.queries_seconds == pytest.approx(100_000)
    assert be.queries_flops == pytest.approx(100_000)
    costs = cumulative_cost_curve(prompt, SCEN, [0, 100_000, 200_000])
    ft_costs = cumulative_cost_curve(ft, SCEN, [0, 100_000, 200_000])
    assert costs == pytest.approx([0.0, 10.0, 20.0]) and ft_costs == pytest.approx([8.0, 10.0, 12.0])
    # a separate training price and a prompt fit cost move the crossing
    pricey = Scenario(price_per_hour=3.6, train_price_per_hour=7.2)
    assert break_even(prompt, ft, pricey).queries_dollars == pytest.approx(200_000)
    fitted = best_from(prompt_cells(0.8, query_seconds=0.1, train_seconds=800.0), "prompt")
    assert break_even(fitted, ft, SCEN).queries_seconds == pytest.approx(90_000)


def _query_cost(seconds: float, warm: float | None, flops: float, amortized: float | None) -> dict:
    return {"extra": {"cost": {"query": {"latency_p50_s": seconds, "latency_p50_warm_s": warm, "flops": flops,
                                         "flops_amortized": amortized}}},
            "query_seconds": seconds, "query_flops": flops}


def test_prefix_cache_scenario_prices_warm_queries():
    """A prompt whose demonstrations a serving engine keeps costs 0.03 s a query instead of 0.1 s: the
    break-even volume moves from 100,000 to 8000 / (0.03 - 0.02) = 800,000 queries."""
    prompt = prompt_cells(0.8, **_query_cost(0.1, 0.03, 1e9, 3e8))
    ft = ft_curve({64: [0.85, 0.85]}, train_seconds=8000.0, train_flops=8e13, **_query_cost(0.02, 0.02, 2e8, 1.9e8))
    cold = analyze(prompt + ft, lambda key: [], SCEN)
    assert cold.break_even.queries_seconds == pytest.approx(100_000)
    cached = Scenario(price_per_hour=SCEN.price_per_hour, prefix_cache=True)
    warm = analyze(prompt + ft, lambda key: [], cached)
    assert warm.break_even.prompt_query_seconds == pytest.approx(0.03)
    assert warm.break_even.queries_seconds == pytest.approx(800_000)
    assert warm.break_even.queries_flops == pytest.approx(8e13 / (3e8 - 1.9e8))
    # served() is idempotent, keeps the record when nothing changes, and falls back where not measured
    rec = prompt[0].served(cached)
    assert rec.served(cached) is rec and prompt[0].served(SCEN) is prompt[0]
    bare = cell("few_shot k=8", "few_shot", 8, 0, 0.8, query_seconds=0.1)
    assert bare.served(cached).query_seconds == 0.1
    with pytest.raises(ConfigError, match="prefix_cache") as info:
        Scenario(prefix_cache="yes")
    assert info.value.field == "prefix_cache" and "true or false" in info.value.message


def test_break_even_never_and_from_the_start():
    prompt = best_from(prompt_cells(0.8, query_seconds=0.01, train_seconds=10.0), "prompt")
    dear = best_from(ft_curve({64: [0.9]}, query_seconds=0.02, train_seconds=100.0), "finetune")
    assert break_even(prompt, dear, SCEN).queries_seconds is None  # not cheaper per query
    cheap = best_from(ft_curve({64: [0.9]}, query_seconds=0.005, train_seconds=5.0), "finetune")
    assert break_even(prompt, cheap, SCEN).queries_seconds == 0
    assert queries_to_break_even(1.0, 1.0, 2.0, 2.0) == 0.0
    assert queries_to_break_even(1.0, 2.0, 2.0, 2.0) is None


# -- significance ------------------------------------------------------------------------------

def rows(key: str, correct: list[int], ids=None) -> list[PredictionRow]:
    ids = ids or [f"ex{i}" for i in range(len(correct))]
    return [PredictionRow(key, i, f"text {i}", "pos", "pos" if c else "neg", float(c))
            for i, c in zip(ids, correct)]


def test_paired_significance_detects_a_real_difference_only():
    rng = np.random.default_rng(0)
    base = (rng.random(300) < 0.6).astype(int)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:60]] = 1  # fixes 60 errors, breaks nothing: +0.2
    a, b = cell("lora", "lora", 64, 0, better.mean()), cell("few", "few_shot", 8, 0, base.mean())
    sig = paired_significance(a, b, rows(a.key, list(better)), rows(b.key, list(base)),
                              metric="accuracy")
    assert sig.diff == pytest.approx(0.2) and sig.n == 300
    assert sig.significant and sig.p_value < 0.01 and sig.low > 0
    same = paired_significance(a, b, rows(a.key, list(base)), rows(b.key, list(base)), metric="accuracy")
    assert same.diff == 0 and same.p_value == 1.0 and not same.significant
    # rows are matched by example id, not position
    shuffled = rows(b.key, list(base))[::-1]
    assert paired_significance(a, b, rows(a.key, list(base)), shuffled).diff == 0
    with pytest.raises(ValueError, match="share no test example"):
        paired_significance(a, b, rows(a.key, [1, 0]), rows(b.key, [1, 0], ids=["x", "y"]))


def test_paired_significance_macro_f1_uses_corpus_metric():
    gold = ["pos"] * 50 + ["neg"] * 50
    a = cell("a", "lora", 64, 0, 1.0, metric="macro_f1")
    b = cell("b", "few_shot", 8, 0, 0.33, metric="macro_f1")
    ra = [PredictionRow(a.key, str(i), "", g, g, 1.0) for i, g in enumerate(gold)]
    rb = [PredictionRow(b.key, str(i), "", g, "pos", float(g == "pos")) for i, g in enumerate(gold)]
    sig = paired_significance(a, b, ra, rb)
    assert sig.metric == "macro_f1" and sig.significant
    assert sig.diff == pytest.approx(1.0 - (2 / 3) / 2)  # all "pos": F1 pos 2/3, neg 0


def correct_rows(c: CellRecord, n: int = 200) -> list[PredictionRow]:
    """``n`` rows of which the first round(value * n) are correct (so the cell's mean is its value)."""
    k = round(c.value * n)
    return rows(c.key, [1] * k + [0] * (n - k))


def test_compare_best_pools_seeds_and_representative():
    ft, pr = ft_curve({64: [0.9, 0.7, 0.8]}), prompt_cells(0.5, seeds=3)
    table = {c.key: correct_rows(c) for c in ft + pr}
    fb, pb = best_from(ft, "finetune"), best_from(pr, "prompt")
    sig = compare_best(fb, pb, table.__getitem__)
    assert sig.diff == pytest.approx(0.8 - 0.5) and sig.n == 200
    assert sig.method == "hierarchical paired bootstrap over 3 vs 3 seeds and 200 shared examples"
    assert (sig.seeds_a, sig.seeds_b) == (3, 3)
    assert sig.significant and sig.a == "lora r=8" and sig.b == "few_shot k=8"
    assert representative(fb).seed == 2  # 0.8 is the mean
    # only examples every cell has are paired
    table[ft[0].key] = table[ft[0].key][:50]
    assert compare_best(fb, pb, table.__getitem__).n == 50
    with pytest.raises(ValueError):
        compare_best(fb, pb, lambda key: [])


def test_compare_best_on_a_corpus_metric_says_seeds_are_not_resampled():
    gold = ["pos"] * 50 + ["neg"] * 50
    ft = [cell("a", "lora", 64, s, 1.0, metric="macro_f1") for s in range(3)]
    pr = [cell("b", "few_shot", 8, s, 1 / 3, metric="macro_f1") for s in range(3)]
    table = {c.key: [PredictionRow(c.key, str(i), "", g, g if c.strategy == "lora" else "pos",
                                   float(c.strategy == "lora" or g == "pos")) for i, g in enumerate(gold)]
             for c in ft + pr}
    sig = compare_best(best_from(ft, "finetune"), best_from(pr, "prompt"), table.__getitem__)
    assert sig.significant and (sig.seeds_a, sig.seeds_b) == (1, 1)
    assert sig.method.startswith("paired bootstrap on 100 shared examples, seed 0 vs seed 0")
    assert sig.method.endswith("(the cells nearest each side's mean of 3 vs 3 seeds; seeds not resampled)")


# -- sensitivity -------------------------------------------------------------------------------

def test_sensitivity_templates_and_seeds():
    base = {"k": 8, "selection": "random", "format": "plain"}
    cells = []
    for prefix, vals in (("Answer:", [0.6, 0.7]), ("Sentiment:", [0.8, 0.9]), ("Label:", [0.5, 0.5])):
        opts = {**base, "answer_prefix": prefix}
        cells += [cell(f"few_shot k=8 {prefix}", "few_shot", 8, s, v, options=opts)
                  for s, v in enumerate(vals)]
    other = {**base, "k": 4, "answer_prefix": "Answer:"}  # differs in k: not a template variant
    cells += [cell("few_shot k=4", "few_shot", 4, 0, 0.1, options=other)]
    cells += ft_curve({64: [0.9, 0.5]})  # fine-tunes are not prompt sensitivity
    rows_ = sensitivity(cells)
    (tmpl,) = [r for r in rows_ if r.across == "formats"]
    assert tmpl.n_train == 8 and tmpl.strategy == "few_shot k=8"
    assert tmpl.variants == ["few_shot k=8 Answer:", "few_shot k=8 Label:", "few_shot k=8 Sentiment:"]
    assert tmpl.values == pytest.approx([0.65, 0.5, 0.85])
    assert tmpl.spread == pytest.approx(0.35)
    assert tmpl.std == pytest.approx(np.std([0.65, 0.5, 0.85], ddof=1))
    seeds = {r.strategy: r for r in rows_ if r.across == "seeds"}
    assert set(seeds) == {"few_shot k=8 Answer:", "few_shot k=8 Sentiment:", "few_shot k=8 Label:"}
    assert seeds["few_shot k=8 Sentiment:"].values == [0.8, 0.9]
    assert seeds["few_shot k=8 Sentiment:"].spread == pytest.approx(0.1)
    assert seeds["few_shot k=8 Label:"].std == 0.0
    assert [r.strategy for r in sensitivity(cells, family="finetune")] == ["lora r=8"]


# -- analyze -----------------------------------------------------------------------------------

def test_analyze_end_to_end_json_and_failed_cells():
    ft = ft_curve({16: [0.6, 0.6], 64: [0.7, 0.7], 256: [0.8, 0.8]}, query_seconds=0.02,
                  train_seconds=8000.0)
    pr = prompt_cells(0.75, seeds=2, query_seconds=0.1)
    bad = cell("full", "full", 64, 0, float("nan"), status="failed", error="CUDA out of memory")
    table = {c.key: correct_rows(c, 20) for c in ft + pr}
    an = analyze(ft + pr + [bad], table.__getitem__, SCEN)
    assert an.best_prompt.variant == "few_shot k=8" and an.best_finetune.n_train == 256
    assert an.crossovers[0].n == pytest.approx(128)
    assert an.break_even.queries_dollars == pytest.approx(100_000)
    assert an.significance.diff == pytest.approx(0.05) and an.significance.a == "lora r=8"
    assert an.failed == [{"key": bad.key, "variant": "full", "strategy": "full", "n_train": 64,
                          "seed": 0, "error": "CUDA out of memory"}]
    assert all(c.ok for c in an.cells)
    d = an.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert "cells" not in d and "rows" not in d and d["best_finetune"]["cells"][0]["key"] == ft[4].key
    assert {i["method"] for i in d["intervals"]} == {"95% hierarchical bootstrap over seeds and test examples"}
    assert d["baseline"]["value"] == 1.0 and d["assumptions"][0] == "Hardware at $3.60 per hour (training too)."
    assert json.loads(text)["scenario"]["price_per_hour"] == 3.6
    # label budget: only n <= 64 fine-tunes count; no predictions -> a note, not a crash
    limited = analyze(ft + pr, lambda key: [], Scenario(price_per_hour=3.6, labels_available=64))
    assert limited.best_finetune.n_train == 64 and limited.significance is None
    assert any("share no test example" in n for n in limited.notes)
    empty = analyze([bad], table.__getitem__, SCEN)
    assert empty.best_prompt is None and empty.crossovers == [] and empty.break_even is None
    assert math.isnan(bad.value) and json.dumps(empty.to_dict(), allow_nan=False)
