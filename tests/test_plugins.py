"""A user adds a strategy without touching adaptlab: examples/plugins.yaml lists examples/plugins/majority.py,
which registers a majority-class baseline (prompt family, counting the labels it reads) through the public
registry. The run stores it as a prompt-family variant with its label counts, the report and results.json show
it, and its artifact predicts once the plugin is imported (`predict --plugin`)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugins.yaml"


def adaptlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "adaptlab", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plugins") / "run"
    done = adaptlab("compare", str(EXAMPLE), "--model", "tiny-random-llama", "--limit", "20", "--out", str(out),
                    "--no-progress")
    assert done.returncode == 0, done.stderr
    return out


def test_the_plugin_strategy_runs_as_a_prompt_variant_counting_its_labels(run: Path) -> None:
    conn = sqlite3.connect(run / "adaptlab.db")
    try:
        rows = conn.execute("SELECT strategy, family, n_train, status FROM cells ORDER BY strategy, n_train").fetchall()
        preds = conn.execute("SELECT DISTINCT c.strategy, p.pred FROM predictions p JOIN cells c ON c.key = p.cell "
                             "WHERE c.strategy = 'majority'").fetchall()
    finally:
        conn.close()
    assert rows == [("majority", "prompt", 16, "done"), ("majority", "prompt", 64, "done"),
                    ("zero_shot", "prompt", 0, "done")]
    assert len(preds) == 1  # one label for every example: the majority of the training labels
    results = json.loads((run / "results.json").read_text())
    majority = [c for c in results["cells"] if c["strategy"] == "majority"]
    assert {(c["family"], c["n_train"], c["variant"]) for c in majority} == {("prompt", 16, "majority"),
                                                                           ("prompt", 64, "majority")}
    assert "majority" in (run / "summary.md").read_text()
    html = (run / "report.html").read_text()
    assert "majority" in html and "zero_shot" in html


def test_a_plugin_artifact_needs_its_plugin_to_predict(run: Path) -> None:
    conn = sqlite3.connect(run / "adaptlab.db")
    folder = conn.execute("SELECT artifact_dir FROM cells WHERE strategy = 'majority' AND n_train = 64").fetchone()[0]
    conn.close()
    without = adaptlab("predict", str(run / folder), "--text", "where is my parcel")
    assert without.returncode == 1 and "unknown artifact kind 'majority'" in without.stderr
    assert "Traceback" not in without.stderr
    with_plugin = adaptlab("predict", str(run / folder), "--text", "where is my parcel",
                           "--plugin", str(REPO / "examples" / "plugins" / "majority.py"))
    assert with_plugin.returncode == 0, with_plugin.stderr
    prior = json.loads((run / folder / "adapted.json").read_text())["prior"]
    assert max(prior, key=prior.get) in with_plugin.stdout


def test_a_plugin_cannot_take_a_built_in_name(tmp_path: Path) -> None:
    plugin = tmp_path / "clash.py"
    plugin.write_text("from adaptlab.strategies import StrategyConfig, strategy, ArtifactKind\n"
                      "@strategy('lora', family='prompt', artifact=ArtifactKind('x', lambda d, j, b: None))\n"
                      "class Clash(StrategyConfig):\n    pass\n")
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: clash\ntask: builtin:demo\nplugins: [clash.py]\nstrategies: [zero_shot]\n")
    out = adaptlab("compare", str(exp), "--out", str(tmp_path / "run"))
    assert out.returncode == 1
    assert "exp.yaml:3 [plugins]" in out.stderr and "'lora' is already registered" in out.stderr
