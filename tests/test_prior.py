"""The no-run estimate (`adaptlab recommend --labels N` without a run): per-class thresholds, cited sources, and
its track record against the measured runs of docs/benchmarks.md (table, docs and rule kept in step)."""

from __future__ import annotations

import json
import os
import re
import statistics
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
FAIR = REPO / "benchmarks" / "results" / "bench_fair_compare.json"
"""The JSON (3 seeds a cell) behind every figure MEASURED_RUNS quotes."""
CITATION = re.compile(r"[A-Z][a-z]+(?: & [A-Z][a-z]+| et al\.)? (?:19|20)\d\d")
AGREED = 4
"""Measured runs the rule agrees with; a rule change that agrees with fewer fails test_track_record_*."""


def est(labels: int, classes: int = 2, **scenario):
    return prior_recommendation(Scenario(labels_available=labels, **scenario), n_classes=classes)


def test_prior_from_published_findings():
    few = est(6, queries_per_month=1e6)  # 3 per class: only prompts were measured this low
    mid_hi = est(12, queries_per_month=1e6)  # 6 per class: not measured, so cost decides
    mid_lo = est(12, queries_per_month=1e3)
    many = est(5000, queries_per_month=1e3)
    churn = est(5000, task_changes_per_year=24)
    assert [r.decision for r in (few, mid_hi, mid_lo, many, churn)] == [
        "prompt", "finetune", "prompt", "finetune", "prompt"]
    assert all(r.basis == "estimate" and "confirm" in r.headline for r in (few, mid_hi, many))
    assert "Liu et al. 2022" in " ".join(mid_hi.reasons) and "T-Few" in " ".join(mid_hi.reasons)
    # 8 per class: SST-2's LoRA beat every prompt at 16 labels, volume aside
    assert est(16, queries_per_month=1e3).choice == "lora" and est(200, queries_per_month=1e3).choice == "lora"
    # a multi-class task that changes monthly keeps an embedding probe (re-trains in seconds), not a prompt
    assert est(5000, 4, task_changes_per_year=24).choice == "embedding_probe or setfit"
    assert est(16, 4, task_changes_per_year=24).choice == "embedding_probe or setfit"  # the LoRA tier too


def test_thresholds_scale_with_classes():
    two, twelve = est(16, 2), est(16, 12)
    assert (two.decision, two.choice) == ("finetune", "lora")
    assert (twelve.decision, twelve.choice) == ("prompt", "calibrate")
    for classes in range(3, 13):  # prompt under 2 per class, LoRA to 16, embedding classifier to 256, then LoRA
        assert est(2 * classes - 1, classes).decision == "prompt"
        assert est(2 * classes, classes).choice == "lora"
        assert est(16 * classes - 1, classes).choice == "lora"
        assert family(est(16 * classes, classes).choice) == "embedding classifier"
        assert family(est(256 * classes - 1, classes).choice) == "embedding classifier"
        assert family(est(256 * classes, classes).choice) == "LM fine-tune"
    assert est(7, 2).choice == "few_shot" and est(7, 2, queries_per_month=1e6).choice == "few_shot"
    assert est(8, 2, queries_per_month=1e6).choice == "lora" and est(8, 2, queries_per_month=1e3).choice == "few_shot"
    assert est(15, 2, latency_budget_s=0.1, queries_per_month=1e3).choice == "lora"
    assert est(15, 2, queries_per_month=1e3).choice == "few_shot"
    assert est(16, 2, queries_per_month=1e3).choice == "lora" and est(1024, 2).choice == "lora"
    assert "1.3 per class over 12 classes" in twelve.reasons[0]


def test_multi_class_estimate_follows_the_measured_crossing():
    six = est(16, 6)  # 2.7 per class
    assert six.decision == "finetune" and six.choice == "lora"
    assert any("Nearest measured run" in r and "lora 0.849" in r for r in six.reasons)
    sixteen = est(64, 4)  # 16 per class
    assert sixteen.choice == "embedding_probe or setfit"
    assert any("Nearest measured run" in r and "setfit 0.882" in r for r in sixteen.reasons)
    # the track record: on the multi-class runs, LoRA was best at 4 per class and an embedding classifier at 16
    measured = {r.labels // r.classes: family(r.best) for r in MEASURED_RUNS if r.classes > 2}
    assert measured == {4: "LM fine-tune", 16: "embedding classifier"}


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
    monkeypatch.setattr(prior, "EMBEDDING_FROM_PER_CLASS", 2)  # the old rule: an embedding classifier from 2 per class
    assert sum(r["agreed"] for r in track_record()[0]) < AGREED
    monkeypatch.setattr(prior, "EMBEDDING_FROM_PER_CLASS", 16)
    monkeypatch.setattr(prior, "FINETUNE_WINS_PER_CLASS", 64)  # fine-tune only from 64 per class
    monkeypatch.setattr(prior, "PRIOR_VOLUME", 1e6)
    assert sum(r["agreed"] for r in track_record()[0]) < AGREED


def _section(heading: str) -> str:
    """The text of docs/benchmarks.md under the heading that contains ``heading``, up to the next heading of the
    same or a higher level."""
    lines = BENCHMARKS.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and heading in line)
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start:end])


def test_measured_runs_quote_docs_benchmarks():
    headings = [line for line in BENCHMARKS.splitlines() if line.startswith("#")]
    for run in MEASURED_RUNS:
        assert any(run.section in h for h in headings), run.section
        section = _section(run.section)
        for figure in re.findall(r"\d\.\d{3}", run.figures):  # every accuracy quoted is under its heading
            assert figure in section, (run.task, run.labels, figure)
        assert run.best in run.figures


def test_measured_runs_match_their_json():
    """``best`` is the measured best in bench_fair_compare.json among the variants that used at most ``labels``
    labels (mean over the seeds), the figure quoted for it is that mean, and the queries are the run's scenario."""
    doc = json.loads(FAIR.read_text(encoding="utf-8"))
    runs = {r["experiment"]: r for r in doc["summary"]["run_folders"]}
    for run in MEASURED_RUNS:
        folder = runs[{"SST-2": "sst2", "AG News": "agnews"}[run.task]]
        assert run.queries == folder["scenario"]["queries_per_month"], run
        values: dict[tuple[str, str, int], list[float]] = {}
        for c in folder["cells"]:
            if c["labels_used"] <= run.labels:
                values.setdefault((c["variant"], c["strategy"], c["n_train"]), []).append(c["value"])
        # the project's rule: 3 seeds a figure (zero-shot, deterministic, has one)
        assert all(len(v) >= 3 for k, v in values.items() if k[2] > 0), run
        (variant, strategy, _), best = max(values.items(), key=lambda kv: statistics.mean(kv[1]))
        assert strategy == run.best, (run.task, run.labels, variant)
        assert f"{run.best} {statistics.mean(best):.3f}" in run.figures, (run.figures, statistics.mean(best))


def test_estimate_doc_has_the_same_table():
    rows, summary = track_record()
    table = [line for line in ESTIMATE_DOC.splitlines() if line.startswith(("| SST-2", "| AG News"))]
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
    assert "estimate" in text and "fine-tune (lora)" in text and "lora 0.849" in text
    assert "Sources: Mosbach et al. 2023" in text and "Tunstall et al. 2022" in text and "docs/benchmarks.md" in text
    assert f"agreed with {AGREED} of {len(MEASURED_RUNS)} measured runs in docs/benchmarks.md" in text
