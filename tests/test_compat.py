"""Runs written before the redesign of issue 12 keep working: `report`, `recommend`, `predict` and
`compare --resume` on a run folder made by the old code (tests/fixtures/oldrun, see make_oldrun.py) give what
the old code gave (the same analysis, decision, shipped cell and predictions; the wording of sentences may
improve), and the store is migrated to the current schema with a recorded version.

Issue 14 changed what two unwritten options do: prompt strategies default to ``format: auto`` (chat on this model,
whose tokenizer has a chat template), gradient fine-tunes to ``min_steps: 50``. Cells whose result that changes get
new keys (`adaptlab.experiment.grid.default_markers`): here the zero_shot and few_shot cells (their format is not
written); the lora cell sets ``max_steps``, so min_steps does not touch it. A resume re-runs those two cells only."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OLD = Path(__file__).parent / "fixtures" / "oldrun"


def adaptlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "adaptlab", *args], capture_output=True, text=True, env=env)


@pytest.fixture()
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(OLD / "run", run)
    return run


CHANGED = {  # path in results.json -> why its value changed on purpose (checked in the test below)
    "analysis.break_even.prompt_query_dollars": "batched serving", "analysis.break_even.finetune_query_dollars":
    "batched serving", "analysis.significance.low": "hierarchical", "analysis.significance.high": "hierarchical",
    "analysis.significance.p_value": "hierarchical", "analysis.significance.method": "hierarchical"}


def _numbers_equal(a: object, b: object, path: str = "") -> None:
    """Equal JSON values, numbers compared as floats (an int 1000 stored as 1000.0 is the same number); ``a`` may
    have keys ``b`` lacks (fields added since), and the `CHANGED` paths are not compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(b) <= set(a), (path, sorted(set(b) - set(a)))
        for k in b:
            if f"{path}.{k}".lstrip(".") not in CHANGED:
                _numbers_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _numbers_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12), path
    else:
        assert a == b, path


def test_report_and_recommend_on_an_old_run_give_the_old_output(old_run: Path) -> None:
    out = adaptlab("report", str(old_run))
    assert out.returncode == 0, out.stderr
    summary, old_summary = (old_run / "summary.md").read_text(), (OLD / "expected" / "summary.md").read_text()
    priced = ("| **Cost per 1,000 queries**", "| **Total over")  # batched serving now: checked below
    labels = "| **Label cost** | $0 | $0 | $0 | $0 |"  # a new row: labels priced at $0 by default

    def table(text: str) -> list[str]:
        return [line for line in text[text.index("## Comparison"):text.index("## Break-even")].splitlines()
                if not line.startswith(priced) and line != labels]

    assert table(old_summary) == table(summary)  # the comparison table, row for row
    assert all(sum(line.startswith(row) for line in summary.splitlines()) == 1 for row in priced)
    assert labels in summary.splitlines()
    got = json.loads((old_run / "results.json").read_text())
    want = json.loads((OLD / "expected" / "results.json").read_text())
    for cell in got["cells"]:  # new fields: cells record their family, and the labels they used (not in old runs)
        assert cell.pop("family") == ("prompt" if cell["strategy"] in ("zero_shot", "few_shot") else "finetune")
        assert cell.pop("labels_used") is None
    for key in ("analysis", "cells", "best", "scenario", "experiment", "schema"):
        _numbers_equal(got[key], want[key], key)
    sig, old_sig = got["analysis"]["significance"], want["analysis"]["significance"]
    assert sig["method"] == "hierarchical paired bootstrap over 1 vs 1 seeds and 16 shared examples"
    assert (sig["diff"], sig["n"], sig["significant"]) == (old_sig["diff"], old_sig["n"], old_sig["significant"])
    assert 0 < sig["p_value"] < 0.05 and sig["low"] > 0
    _old_prices_one_request_at_a_time(old_run, want["analysis"]["break_even"])
    decided = ("decision", "choice", "cell_key", "basis", "labels_needed")
    assert {k: got["recommendation"][k] for k in decided} == {k: want["recommendation"][k] for k in decided}
    rec = adaptlab("recommend", str(old_run), "--json")
    assert rec.returncode == 0, rec.stderr
    old_rec = json.loads((OLD / "expected" / "recommend.json").read_text())
    assert {k: json.loads(rec.stdout)[k] for k in decided} == {k: old_rec[k] for k in decided}
    conn = sqlite3.connect(old_run / "adaptlab.db")
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
        families = dict(conn.execute("SELECT strategy, family FROM cells").fetchall())
        assert conn.execute("SELECT count(*) FROM cells WHERE labels_used IS NOT NULL").fetchone()[0] == 0
    finally:
        conn.close()
    assert families == {"zero_shot": "prompt", "few_shot": "prompt", "embedding_probe": "finetune",
                        "lora": "finetune"}


def _old_prices_one_request_at_a_time(run: Path, old: dict) -> None:
    """Served one request at a time (the old pricing), the old run's per-query dollars are the old ones."""
    from adaptlab.analysis import analyze
    from adaptlab.experiment.store import RunStore
    from adaptlab.results import Scenario

    store = RunStore(run, create=False)
    try:
        scenario = Scenario.from_stored((store.experiment() or {}).get("scenario")).replace(serving="single")
        be = analyze(store.cells(), store.predictions, scenario).break_even
    finally:
        store.close()
    for side in ("prompt_query_dollars", "finetune_query_dollars"):
        assert getattr(be, side) == pytest.approx(old[side], rel=1e-12), side


def test_predict_on_old_artifacts_gives_the_old_predictions(old_run: Path, tmp_path: Path) -> None:
    expected = json.loads((OLD / "expected" / "predict.json").read_text())
    conn = sqlite3.connect(old_run / "adaptlab.db")
    folders = dict(conn.execute("SELECT key, artifact_dir FROM cells").fetchall())
    conn.close()
    assert folders.keys() == expected["cells"].keys()
    for key, want in expected["cells"].items():
        out = adaptlab("predict", str(old_run / folders[key]), "--text", expected["text"],
                       "--output", str(tmp_path / "p.jsonl"))
        assert out.returncode == 0, out.stderr
        got = json.loads((tmp_path / "p.jsonl").read_text())
        assert got["pred"] == want["pred"], key
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6), key


def test_compare_resume_recognises_the_old_cells(old_run: Path) -> None:
    def finished() -> dict[str, str]:
        conn = sqlite3.connect(old_run / "adaptlab.db")
        try:
            return dict(conn.execute("SELECT key, finished_at FROM cells WHERE status = 'done'").fetchall())
        finally:
            conn.close()

    def stored() -> dict[str, tuple[str, dict, int | None]]:
        conn = sqlite3.connect(old_run / "adaptlab.db")
        try:
            rows = conn.execute("SELECT key, strategy, extra, labels_used FROM cells").fetchall()
        finally:
            conn.close()
        return {key: (strategy, json.loads(extra)["cell"], labels) for key, strategy, extra, labels in rows}

    from adaptlab.experiment.grid import cell_key

    before = finished()
    out = adaptlab("-v", "compare", str(OLD / "experiment.yaml"), "--out", str(old_run), "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr
    # the two prompt cells re-run under format: auto (module docstring); the fine-tunes keep their keys
    assert "4 cells, 2 done, 2 to run" in out.stderr
    after, cells = finished(), stored()
    kept = {k for k in before if cells[k][0] in ("embedding_probe", "lora")}
    assert len(kept) == 2 and {k: after[k] for k in kept} == {k: before[k] for k in kept}  # did not re-run
    new = {k: v for k, v in cells.items() if k not in before}
    assert sorted(strategy for strategy, _, _ in new.values()) == ["few_shot", "zero_shot"]
    for key, (strategy, payload, labels) in new.items():
        assert payload["format"] == "auto" and "min_steps" not in payload and cell_key(payload) == key
        old_key = cell_key({k: v for k, v in payload.items() if k != "format"})
        assert old_key in before and cells[old_key][0] == strategy  # the old cell, plus the marker
        assert labels == (2 if strategy == "few_shot" else 0)  # few_shot k=2 shows two labels
