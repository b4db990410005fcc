"""The no-run estimate (`adaptlab recommend --labels N` without a run): per-class thresholds, cited sources, and
its track record against the measured runs of docs/benchmarks.md (table, docs and rule kept in step)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from adaptlab.recommend import prior
from adaptlab.recommend.prior import (
    MEASURED_RUNS,
    family,
    prior_recommendation,
    track_record,
)
from adaptlab.results import Scenario

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
ESTIMATE_DOC = (REPO / "docs" / "estimate.md").read_text(encoding="utf-8")
CITATION = re.compile(r"[A-Z][a-z]+(?: & [A-Z][a-z]+| et al\.)? (?:19|20)\d\d")
AGREED = 8
"""Measured runs the rule agrees with; a rule change that agrees with fewer fails test_track_record_*."""


def est(labels: int, classes: int = 2, **scenario):
    return prior_recommendation(Scenario(labels_available=labels, **scenario), n_classes=classes)


def test_prior_from_published_findings():
    few = est(10, queries_per_month=1e6)
    mid_hi = est(40, queries_per_month=1e6)
    mid_lo = est(40, queries_per_month=1e3)
    many = est(5000, queries_per_month=1e3)
    churn = est(5000, task_changes_per_year=24)
    assert [r.decision for r in (few, mid_hi, mid_lo, many, churn)] == [
        "prompt", "finetune", "prompt", "finetune", "prompt"]
    assert all(r.basis == "estimate" and "confirm" in r.headline for r in (few, mid_hi, many))
    assert "Liu et al. 2022" in " ".join(mid_hi.reasons) and "T-Few" in " ".join(mid_hi.reasons)
    assert est(200, queries_per_month=1e3).choice == "lora"  # 100 per class: SST-2's fine-tunes won, volume aside
    # a multi-class task that changes monthly keeps an embedding probe (re-trains in seconds), not a prompt
    assert est(5000, 4, task_changes_per_year=24).choice == "embedding_probe or setfit"


def test_thresholds_scale_with_classes():
    two, six = est(16, 2), est(16, 6)
    assert (two.decision, two.choice) == ("prompt", "few_shot")
    assert (six.decision, six.choice) != (two.decision, two.choice)
    for classes in range(3, 13):  # the prompt gives way to a classifier at 2 labels per class
        assert est(2 * classes - 1, classes).decision == "prompt"
        assert family(est(2 * classes, classes).choice) == "embedding classifier"
        assert family(est(256 * classes, classes).choice) == "LM fine-tune"
    assert est(31, 2).choice == "few_shot" and est(31, 2, queries_per_month=1e6).choice == "few_shot"
    assert est(32, 2, queries_per_month=1e6).choice == "lora" and est(32, 2, queries_per_month=1e3).choice == "few_shot"
    assert est(64, 2, queries_per_month=1e3).choice == "lora" and est(256, 2).choice == "lora or ia3"
    assert "2.7 per class over 6 classes" in six.reasons[0]


def test_six_classes_at_16_labels_is_an_embedding_classifier_as_measured():
    six = est(16, 6)
    assert six.decision == "finetune" and six.choice == "embedding_probe or setfit"
    # the track record: on the multi-class run, from 2 labels per class on, an embedding classifier was best
    measured = [r for r in MEASURED_RUNS if r.classes > 2 and r.labels / r.classes >= 2]
    assert measured and all(family(r.best) == "embedding classifier" for r in measured)
    assert any("Nearest measured run" in r and "embedding_probe 0.760" in r for r in six.reasons)


@pytest.mark.parametrize("labels,classes,kw", [(0, 2, {}), (16, 2, {}), (16, 6, {}), (8, 7, {}), (40, 2, {}),
                                               (200, 2, {}), (5000, 4, {}), (5000, 2, {"task_changes_per_year": 24})])
def test_reasons_cite_their_sources(labels, classes, kw):
    rec = est(labels, classes, **kw)
    text = " ".join(rec.reasons)
    sources = next(r for r in rec.reasons if r.startswith("Sources: "))
    assert "docs/benchmarks.md" in sources
    assert CITATION.search(rec.reasons[1]), rec.reasons[1]  # the deciding reason names a source ...
    for c in CITATION.findall(" ".join(rec.reasons + rec.would_change)):  # ... and the Sources line spells out each
        assert c in sources, (c, sources)
    assert re.search(r"agreed with \d+ of \d+ measured runs in docs/benchmarks\.md", text)


def test_generation_says_its_track_record_is_classification_only():
    rec = prior_recommendation(Scenario(labels_available=100), task_type="generation")
    assert any("no generation run is measured yet" in r for r in rec.reasons)


def test_track_record_agrees_with_the_table():
    rows, summary = track_record()
    assert len(rows) == len(MEASURED_RUNS)
    for row in rows:  # the table's "estimate says" column is what the rule says now
        assert row["estimate_now"] == row["estimate"], row
        assert row["agreed"] == (family(row["estimate"]) == family(row["best"]))
    assert sum(r["agreed"] for r in rows) >= AGREED
    assert summary == f"agreed with {AGREED} of {len(MEASURED_RUNS)} measured runs in docs/benchmarks.md"


def test_track_record_catches_a_rule_that_disagrees(monkeypatch):
    monkeypatch.setattr(prior, "PROMPT_BELOW_PER_CLASS", 8)  # a rule that keeps multi-class tasks on prompts longer
    rows, summary = track_record()
    assert sum(r["agreed"] for r in rows) < AGREED and f"of {len(MEASURED_RUNS)}" in summary
    monkeypatch.setattr(prior, "PROMPT_BELOW_PER_CLASS", 2)
    monkeypatch.setattr(prior, "FINETUNE_WINS_PER_CLASS", 64)  # fine-tune only from 64 per class
    monkeypatch.setattr(prior, "PRIOR_VOLUME", 1e6)
    assert sum(r["agreed"] for r in track_record()[0]) < AGREED


def test_measured_runs_quote_docs_benchmarks():
    headings = [line for line in BENCHMARKS.splitlines() if line.startswith("#")]
    for run in MEASURED_RUNS:
        assert any(run.section in h for h in headings), run.section
        for figure in re.findall(r"\d\.\d{3}", run.figures):  # every accuracy quoted is in the file
            assert figure in BENCHMARKS, (run.task, run.labels, figure)
        assert run.best in run.figures


def test_estimate_doc_has_the_same_table():
    rows, summary = track_record()
    table = [line for line in ESTIMATE_DOC.splitlines() if line.startswith(("| SST-2", "| intent"))]
    assert len(table) == len(rows)
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["task"] and cells[1] == str(row["classes"]) and cells[2].startswith(f"{row['labels']} (")
        assert cells[4] == f"`{row['best']}`" and cells[6] == f"`{row['estimate_now']}`"
        assert row["figures"] in cells[5] and cells[7] == ("yes" if row["agreed"] else "no")
    assert f"The estimate {summary}." in ESTIMATE_DOC
    assert "docs/estimate.md" in (REPO / "README.md").read_text(encoding="utf-8")


def test_cli_shows_sources_and_track_record():
    out = subprocess.run([sys.executable, "-m", "adaptlab", "recommend", "--labels", "16", "--classes", "6"],
                         check=False, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # rich wraps long bullets
    assert "estimate" in text and "embedding_probe or setfit" in text
    assert "Sources: Tunstall et al. 2022" in text and "docs/benchmarks.md" in text
    assert f"agreed with {AGREED} of {len(MEASURED_RUNS)} measured runs in docs/benchmarks.md" in text
