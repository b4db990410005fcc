"""The recommendation reads well for every metric and outcome: chrF values and targets in chrF's own scale,
decisions in words (never raw names), one break-even sentence shared by the terminal, summary.md and the report,
"from the first query" below one query a month, p-values written one way, thin evidence said plainly."""

from __future__ import annotations

import re

import numpy as np

from adaptlab.analysis import analyze
from adaptlab.recommend import recommend
from adaptlab.recommend.text import fmt_p, fmt_queries
from adaptlab.results import CellRecord, PredictionRow, Scenario

N = 200


def run(metric: str, scores: dict[str, tuple[float, float, float, int]], seeds=(0, 1, 2)):
    """One cell per seed for each variant: (mean score, train seconds, query seconds, n_train)."""
    cells, preds = [], {}
    rng = np.random.default_rng(0)
    for variant, (mean, train_s, query_s, n) in scores.items():
        strategy = "zero_shot" if n == 0 else ("few_shot" if variant.startswith("few") else "lora")
        for seed in seeds:
            key = f"{variant}-{seed}"
            per = np.clip(rng.normal(mean, 5 if metric == "chrf" else 0.1, N), 0, 100 if metric == "chrf" else 1)
            preds[key] = [PredictionRow(key, f"e{i}", "", "ref", "hyp", float(s)) for i, s in enumerate(per)]
            cells.append(CellRecord(key=key, strategy=strategy, options={}, n_train=n, seed=seed, variant=variant,
                                    metric=metric, value=float(per.mean()), ci_low=float(per.mean()) - 2,
                                    ci_high=float(per.mean()) + 2, n_test=N, train_seconds=train_s,
                                    query_seconds=query_s))
    return cells, preds


def decide(cells_preds, sc: Scenario):
    cells, preds = cells_preds
    return recommend(analyze(cells, lambda k: preds[k], sc), sc)


def test_chrf_reads_in_its_own_scale_and_decisions_in_words() -> None:
    r = run("chrf", {"few_shot k=4": (41.0, 0.0, 0.3, 4), "lora": (52.0, 3600.0, 0.05, 256)})
    rec = decide(r, Scenario(price_per_hour=1.0, queries_per_month=50_000))
    text = " ".join([rec.headline, *rec.reasons, *rec.would_change, rec.break_even or ""])
    assert "accuracy" not in text
    assert re.search(r"scores 5\d\.\d chrf \[", text) and not re.search(r"\d\.\d{3} chrf", text)
    assert "chrf target at or below 4" in text  # the target in chrF's scale: about 41, not 0.000
    assert not re.search(r"\b(too_close|finetune|collect_labels)\b", text)
    assert "points of chrf" in text


def test_break_even_below_one_query_is_from_the_first_query() -> None:
    r = run("accuracy", {"few_shot k=8": (0.80, 0.0, 0.5, 8), "lora": (0.80, 1.0, 0.01, 64)})
    rec = decide(r, Scenario(price_per_hour=1.0, queries_per_month=1000, accuracy_target=0.7))
    assert "from the first query" in rec.break_even and "0.0" not in rec.break_even
    assert fmt_queries(0.018) == "from the first query" and fmt_queries(950) == "at 950 queries a month"
    assert fmt_p(0.0) == "p < 0.001" and fmt_p(0.0123) == "p = 0.012"


def test_thin_evidence_is_said_in_the_headline() -> None:
    r = run("accuracy", {"few_shot k=8": (0.6, 0.0, 0.5, 8), "lora": (0.95, 10.0, 0.05, 64)}, seeds=(0,))
    rec = decide(r, Scenario())
    assert rec.evidence and "one seed" in rec.headline and "seeds: [0, 1, 2]" in rec.headline
