"""Runs written before the redesign of issue 12 keep working: `report`, `recommend`, `predict` and
`compare --resume` on a run folder made by the old code (tests/fixtures/oldrun, see make_oldrun.py) give what
the old code gave (the same analysis, decision, shipped cell and predictions; the wording of sentences may
improve), and the store is migrated to the current schema with a recorded version."""

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


def _numbers_equal(a: object, b: object, path: str = "") -> None:
    """Equal JSON values, numbers compared as floats (an int 1000 stored as 1000.0 is the same number)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, sorted(set(a) ^ set(b)))
        for k in a:
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
    table = old_summary[old_summary.index("## Comparison"):old_summary.index("## Break-even")]
    assert table in summary  # the comparison table, row for row
    got = json.loads((old_run / "results.json").read_text())
    want = json.loads((OLD / "expected" / "results.json").read_text())
    for cell in got["cells"]:  # a new field: cells record their family
        assert cell.pop("family") == ("prompt" if cell["strategy"] in ("zero_shot", "few_shot") else "finetune")
    for key in ("analysis", "cells", "best", "scenario", "experiment", "schema"):
        _numbers_equal(got[key], want[key], key)
    decided = ("decision", "choice", "cell_key", "basis", "labels_needed")
    assert {k: got["recommendation"][k] for k in decided} == {k: want["recommendation"][k] for k in decided}
    rec = adaptlab("recommend", str(old_run), "--json")
    assert rec.returncode == 0, rec.stderr
    old_rec = json.loads((OLD / "expected" / "recommend.json").read_text())
    assert {k: json.loads(rec.stdout)[k] for k in decided} == {k: old_rec[k] for k in decided}
    conn = sqlite3.connect(old_run / "adaptlab.db")
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
        families = dict(conn.execute("SELECT strategy, family FROM cells").fetchall())
    finally:
        conn.close()
    assert families == {"zero_shot": "prompt", "few_shot": "prompt", "embedding_probe": "finetune",
                        "lora": "finetune"}


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

    before = finished()
    out = adaptlab("-v", "compare", str(OLD / "experiment.yaml"), "--out", str(old_run), "--resume", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "4 cells, 4 done, 0 to run" in out.stderr
    assert finished() == before  # nothing re-ran: the keys are stable
