"""adaptlab.recommend on hand-made results: each decision, the break-even flip, projections, and the
`adaptlab recommend` command (no run dir, a real run store, bad values); the no-run estimate itself: test_prior.py."""

from __future__ import annotations

import json
import math
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from adaptlab.analysis import analyze
from adaptlab.recommend import Recommendation, recommend
from adaptlab.results import CellRecord, PredictionRow, Scenario

REPO = Path(__file__).resolve().parents[1]
N_TEST = 400
PROMPT_Q, FT_Q, FT_TRAIN = 0.5, 0.05, 360_000.0  # seconds per query; fine-tune training seconds (100 h)
# At $1/h over 12 months: $100 training / (12 x (0.5 - 0.05)/3600 $ per query) = 66,667 queries a month.
BREAK_EVEN = (FT_TRAIN / 3600) / (12 * (PROMPT_Q - FT_Q) / 3600)


def make_run(prompt_acc: float, ft_accs: dict[int, float], *, seeds=(0, 1, 2)):
    """zero-shot (0.55), few-shot k=8 (``prompt_acc``) and LoRA at each n (``ft_accs``); each cell's
    value is the mean of its per-example scores drawn around the given accuracy."""
    specs = [("zero_shot", "zero_shot", 0, 0.55, 0.3, 0.0), ("few_shot k=8", "few_shot", 8, prompt_acc, PROMPT_Q, 0.0)]
    specs += [("lora r=8", "lora", n, acc, FT_Q, FT_TRAIN) for n, acc in ft_accs.items()]
    cells, preds = [], {}
    for variant, strategy, n, acc, qs, ts in specs:
        for seed in seeds:
            key = f"{strategy}-{n}-{seed}"
            rng = np.random.default_rng(zlib.crc32(key.encode()))
            scores = (rng.random(N_TEST) < acc).astype(float)
            value = float(scores.mean())
            gold = ["a" if i % 2 else "b" for i in range(N_TEST)]  # two balanced classes: the majority baseline is 0.5
            preds[key] = [PredictionRow(key, f"ex{i}", "", g, g if s else ("b" if g == "a" else "a"), s)
                          for i, (g, s) in enumerate(zip(gold, scores))]
            cells.append(CellRecord(key=key, strategy=strategy, options={}, n_train=n, seed=seed,
                                    variant=variant, value=value, ci_low=value - 0.04, ci_high=value + 0.04,
                                    n_test=N_TEST, train_seconds=ts, query_seconds=qs))
    return cells, preds


def decide(run, **scenario) -> Recommendation:
    cells, preds = run
    sc = Scenario(price_per_hour=1.0, months=12, **scenario)
    return recommend(analyze(cells, lambda key: preds[key], sc), sc)


CLOSE = make_run(0.86, {16: 0.70, 64: 0.80, 256: 0.86})
FT_BETTER = make_run(0.78, {16: 0.70, 64: 0.84, 256: 0.93})
PROMPT_BETTER = make_run(0.90, {16: 0.60, 64: 0.70, 256: 0.78})
SHORT = make_run(0.82, {16: 0.70, 64: 0.80, 256: 0.88})
SATURATING = make_run(0.82, {16: 0.72, 64: 0.82, 256: 0.87})


def test_finetune_when_clearly_better_and_no_target():
    rec = decide(FT_BETTER, queries_per_month=1_000)
    assert (rec.decision, rec.choice, rec.basis) == ("finetune", "lora r=8", "measured")
    assert rec.cell_key.startswith("lora-256-")
    text = " ".join(rec.reasons)
    assert "paired bootstrap" in text and "significant" in text and "not significant" not in text
    # cheap volume: the prompt would win on cost if quality stopped deciding (a target both meet)
    assert any("accuracy target" in w and "few_shot k=8" in w for w in rec.would_change)
    # crossover: LoRA matches the 0.78 prompt between 16 and 64 labels
    assert any(w.startswith("With fewer than") and "does not yet match" in w for w in rec.would_change)


def test_prompt_when_clearly_better_even_if_dearer():
    rec = decide(PROMPT_BETTER, queries_per_month=10_000_000)
    assert rec.decision == "prompt" and rec.choice == "few_shot k=8"
    assert rec.cell_key.startswith("few_shot-8-")
    assert "clearly better" in rec.headline


def test_too_close_picks_the_cheaper_and_says_so():
    low, high = decide(CLOSE, queries_per_month=1_000), decide(CLOSE, queries_per_month=10_000_000)
    assert low.decision == high.decision == "too_close"
    assert (low.choice, high.choice) == ("few_shot k=8", "lora r=8")
    assert "cheaper" in low.headline and "Too close" in low.headline
    assert any("not significant" in r for r in low.reasons)


@pytest.mark.parametrize("queries", [BREAK_EVEN * 0.5, BREAK_EVEN * 2])
def test_break_even_flips_the_decision(queries):
    rec = decide(CLOSE, queries_per_month=queries, accuracy_target=0.80)  # both meet it: cost decides
    expected = "prompt" if queries < BREAK_EVEN else "finetune"
    assert rec.decision == expected
    flip = [w for w in rec.would_change if "queries a month" in w]
    assert len(flip) == 1 and f"{BREAK_EVEN / 1000:.3g}k" in flip[0]
    other = "you would fine-tune" if expected == "prompt" else "you would prompt"  # words, not raw decision names
    assert flip[0].startswith("Below" if expected == "finetune" else "Above") and other in flip[0]
    assert any(f"Break-even at {BREAK_EVEN / 1000:.3g}k" in r for r in rec.reasons)


def test_prefix_cache_prices_warm_prompts_and_flips_the_decision():
    """With the prompt's prefix kept, the 8-shot prompt answers in 0.06 s, not 0.5 s: at twice the cold
    break-even volume the cheaper option is now the prompt, and each side names the other."""
    import dataclasses

    cells = [dataclasses.replace(c, extra={"cost": {"query": {
        "latency_p50_s": c.query_seconds,
        "latency_p50_warm_s": 0.06 if c.strategy == "few_shot" else c.query_seconds}}}) for c in CLOSE[0]]
    preds = CLOSE[1]
    run = (cells, preds)
    cold = decide(run, queries_per_month=BREAK_EVEN * 2, accuracy_target=0.80)
    warm = decide(run, queries_per_month=BREAK_EVEN * 2, accuracy_target=0.80, prefix_cache=True)
    assert (cold.decision, warm.decision) == ("finetune", "prompt")
    assert any("With a serving engine that keeps prompt prefixes" in w and "prompt" in w for w in cold.would_change)
    assert any("Without a serving engine" in w and "fine-tune" in w for w in warm.would_change)
    # recommend() prices the scenario it is given, not only the one the analysis was made under
    sc = Scenario(price_per_hour=1.0, months=12, queries_per_month=BREAK_EVEN * 2, accuracy_target=0.80,
                  prefix_cache=True)
    cold_analysis = analyze(cells, lambda key: preds[key], Scenario(price_per_hour=1.0, months=12))
    assert recommend(cold_analysis, sc).decision == "prompt"


def test_task_changes_tip_the_cost():
    steady = decide(CLOSE, queries_per_month=BREAK_EVEN * 2, accuracy_target=0.80)
    churn = decide(CLOSE, queries_per_month=BREAK_EVEN * 2, accuracy_target=0.80, task_changes_per_year=4)
    assert (steady.decision, churn.decision) == ("finetune", "prompt")  # 1 + 4 trainings > 2x volume
    assert any("task changed more than 1 times" in w for w in steady.would_change)


def test_collect_labels_projects_a_saturating_learning_curve():
    """0.72, 0.82, 0.87 at 16, 64, 256 labels (0.92 - 0.8 / sqrt(n)): 0.89 is projected near 711 labels, inside
    4x the largest measured size, with a 90% interval over the seeds' curves."""
    rec = decide(SATURATING, accuracy_target=0.89)
    assert rec.decision == "collect_labels" and rec.choice == "lora r=8"
    assert 256 < rec.labels_needed <= 1024 and rec.labels_low <= rec.labels_needed <= rec.labels_high
    assert rec.labels_low >= 250  # never below the largest measured size, whose mean is below the target
    assert "labels in all (90% interval" in rec.headline and "projected" in rec.headline
    assert any(r.startswith("Projected: lora r=8 (saturating fit") for r in rec.reasons)
    assert rec.cell_key.startswith("lora-256-")  # the best to ship meanwhile (0.87 > 0.82)


def test_a_curve_rising_straight_in_log_n_is_not_extrapolated_past_4x():
    """The old straight line in log n put 0.95 at ~660 labels; a saturating fit puts it beyond 4 x 256: refused,
    with no number."""
    rec = decide(SHORT, accuracy_target=0.95)
    assert rec.decision == "finetune" and rec.labels_needed is None and rec.labels_high is None
    refusal = next(r for r in rec.reasons if r.startswith("lora r=8:"))
    assert "not projected" in refusal and "4x" in refusal and "about" not in refusal
    assert "misses the target" in rec.headline


def test_collect_labels_uses_a_measured_size_beyond_the_labels_on_hand():
    rec = decide(SHORT, accuracy_target=0.85, labels_available=64)
    assert rec.decision == "collect_labels" and rec.labels_needed == 256 and rec.labels_low is None
    assert "192 more" in rec.headline and any(r.startswith("Measured: lora r=8 reached") for r in rec.reasons)


def test_projection_within_the_labels_on_hand_says_retrain_on_all():
    rec = decide(SATURATING, accuracy_target=0.89, labels_available=1000)  # measured up to 256
    assert rec.decision == "finetune" and rec.choice == "lora r=8"
    assert 256 < rec.labels_needed <= 1000 and "on all 1,000 labels" in rec.headline and "confirm" in rec.headline
    assert rec.cell_key.startswith("lora-256-")


def test_no_allowed_cell_asks_for_the_fewest_measured_labels():
    cells = [c for c in CLOSE[0] if c.strategy != "zero_shot"]
    rec = decide((cells, CLOSE[1]), labels_available=4)
    assert (rec.decision, rec.labels_needed, rec.choice) == ("collect_labels", 8, "few_shot k=8")


def test_without_predictions_the_intervals_decide():
    no_rows = {key: [] for key in CLOSE[1]}
    close = decide((CLOSE[0], no_rows), queries_per_month=1_000)
    better = decide((FT_BETTER[0], {key: [] for key in FT_BETTER[1]}), queries_per_month=1_000)
    assert close.decision == "too_close" and any("intervals overlap" in r for r in close.reasons)
    assert better.decision == "finetune" and any("do not overlap" in r for r in better.reasons)


def test_unreachable_target_is_capped_and_warns():
    flat = make_run(0.82, {16: 0.70, 64: 0.71, 256: 0.72})
    rec = decide(flat, accuracy_target=0.97)
    assert rec.decision == "prompt" and rec.labels_needed is None
    text = " ".join(rec.reasons)
    assert "not projected" in text and "4x" in text and "Warning" in text


def test_labels_and_latency_limit_the_candidates():
    limited = decide(FT_BETTER, labels_available=16, queries_per_month=1_000)
    assert limited.decision == "prompt"  # LoRA on 16 labels (0.70) is clearly worse than 0.78
    assert any(r.startswith("Excluded: the best fine-tune overall, lora r=8 at 256 labels") for r in limited.reasons)
    assert any(w.startswith("With about") and "matches the best prompt" in w for w in limited.would_change)
    none_ft = decide(FT_BETTER, labels_available=8, queries_per_month=1_000)
    assert none_ft.decision == "prompt" and "only family with results" in none_ft.headline
    fast = decide(PROMPT_BETTER, latency_budget_s=0.1, queries_per_month=1_000)
    assert fast.decision == "finetune"  # the 0.5 s prompts are out
    assert any("would admit few_shot k=8" in w for w in fast.would_change)
    none = decide(PROMPT_BETTER, latency_budget_s=0.01)
    assert any("budget is ignored" in r for r in none.reasons) and none.decision == "prompt"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv" / "bin" / "adaptlab"), "recommend", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_cli_prior_without_run():
    out = _cli("--labels", "200", "--queries-per-month", "1e6", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["decision"] == "finetune" and doc["basis"] == "estimate"
    text = _cli("--labels", "10", "--queries-per-month", "1000")
    assert text.returncode == 0 and "prompt" in text.stdout and "estimate" in text.stdout


def test_cli_bad_value_is_one_line_error():
    out = _cli("--queries-per-month", "-5")
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--queries-per-month" in lines[0] and ">= 0" in lines[0]
    assert "Traceback" not in out.stderr


def test_cli_redecides_a_stored_run(tmp_path):
    from adaptlab.experiment.store import RunStore

    cells, preds = CLOSE
    with RunStore(tmp_path / "run") as store:
        scenario = Scenario(price_per_hour=1.0, accuracy_target=0.8).to_dict()
        store.save_experiment({"name": "t", "scenario": scenario}, {})
        for c in cells:
            store.put_cell(c, preds[c.key])
    docs = [json.loads(_cli(str(tmp_path / "run"), "--queries-per-month", str(q), "--json").stdout)
            for q in (BREAK_EVEN / 2, BREAK_EVEN * 2)]
    assert [d["decision"] for d in docs] == ["prompt", "finetune"]
    shown = _cli(str(tmp_path / "run"), "--queries-per-month", "1000")
    assert shown.returncode == 0 and "What would change it" in shown.stdout
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no adaptlab run" in missing.stderr
