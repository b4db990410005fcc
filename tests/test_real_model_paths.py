"""Paths the rest of the suite never walked to the end, each trimmed to under a minute on 2 shared cores:

- LoRA on the real default model (SmolLM2-135M-Instruct) beats its own zero-shot prompt on held-out examples;
- `adaptlab demo` runs to completion: the printed table, report.html, and a best/ that holds the recommended
  cell's artifact and that `adaptlab predict` reproduces;
- `adaptlab compare` on a generation task with the real model: chrF with an interval in every cell, and a
  recommendation that speaks chrF (its scale, its name), never accuracy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def adaptlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "adaptlab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600, check=False)


def table_row(stdout: str, variant: str, n_train: int, seeds: int, value: float) -> str:
    """The printed results-table line of (variant, n_train), with its seeds and mean value (3 decimals)."""
    pattern = rf"^\s*{re.escape(variant)}\s+{n_train}\s+{seeds}\s+{value:.3f}\s"
    rows = [line for line in stdout.splitlines() if re.match(pattern, line)]
    assert len(rows) == 1, (pattern, stdout)
    return rows[0]


def check_table(stdout: str, cells: list[dict]) -> None:
    """Every (variant, n_train) of the run is one printed row showing its seeds and mean over them."""
    groups: dict[tuple[str, int], list[float]] = {}
    for c in cells:
        groups.setdefault((c["variant"], c["n_train"]), []).append(c["value"])
    for (variant, n), values in groups.items():
        table_row(stdout, variant, n, len(values), sum(values) / len(values))


# -- 1. LoRA on real weights ------------------------------------------------------------------------------------

@pytest.mark.integration
def test_lora_on_the_real_model_beats_its_zero_shot_prompt(default_loaded, tmp_path: Path) -> None:
    """16 labelled intents, 6 optimizer steps: LoRA on SmolLM2-135M-Instruct against the very prompt it trains on
    (the zero-shot prompt in the fine-tune's plain format), on 30 held-out test messages of the 7-intent demo.

    Measured (seed 0, 1 and 2 threads alike): zero-shot 0.333, LoRA 0.600; seeds 1 and 2 gave LoRA 0.567 and 0.500.
    The assertion asks for 0.15 (5 of 30 messages), below the smallest of those gaps (0.167)."""
    from adaptlab.data import builtin_task
    from adaptlab.data.example import seeded_sample
    from adaptlab.data.splits import load_splits, nested_subsets
    from adaptlab.evaluate import EvalSettings, evaluate
    from adaptlab.strategies import FitContext, LoraConfig, ZeroShotConfig

    task = builtin_task("demo")
    splits = load_splits(task)
    train = nested_subsets(splits.train, [16], seed=0, label_of=task.label_of)[16]
    test = seeded_sample(splits.test, 30, 0)
    assert not {ex.id for ex in train} & {ex.id for ex in test}
    settings = EvalSettings(latency_sample=0, throughput_sample=0)
    ctx = FitContext.of(default_loaded, work_dir=tmp_path, seed=0)

    lora = LoraConfig(max_steps=6, batch_size=4, learning_rate=1e-2, dropout=0.0, select_on_dev=False,
                      eval_metric=False, progress=False, save_every=0, log_every=1)
    tuned = lora.fit(task, train, [], ctx)
    prompt = ZeroShotConfig(format="plain").fit(task, train, [], ctx)
    assert prompt.fmt == tuned.prompt.fmt  # the same prompt: only the adaptation differs

    zero = evaluate(prompt, task, test, settings=settings).metric
    tuned_metric = evaluate(tuned, task, test, settings=settings).metric
    assert tuned_metric["value"] >= zero["value"] + 0.15, (zero, tuned_metric)
    assert tuned.train_cost["trainable_params"] == 921_600  # r=8 on q, k, v, o of 30 layers (576 wide, kv 192)
    losses = [h["loss"] for h in tuned.history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert tuned.labels_used == {"train": 16, "dev": 0}


# -- 2. `adaptlab demo` to the end ------------------------------------------------------------------------------

def test_demo_runs_to_the_end_and_best_is_the_recommended_artifact(tmp_path: Path) -> None:
    """`adaptlab demo` as a user runs it, trimmed by its own options: the tiny model for the LLM cells (the demo's
    real MiniLM embedder for the probes) and 12 test examples; all 9 cells of the packaged experiment."""
    from adaptlab.experiment.store import RunStore

    out = adaptlab("demo", "--out", "run", "--model", "tiny-random-llama", "--limit", "12", "--no-progress",
                   cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    doc = json.loads((run / "results.json").read_text(encoding="utf-8"))
    cells = doc["cells"]
    assert len(cells) == 9 and {c["status"] for c in cells} == {"done"} and {c["n_test"] for c in cells} == {12}
    assert {c["strategy"] for c in cells} == {"zero_shot", "few_shot", "calibrate", "embedding_probe", "lora"}

    # the printed table and headline
    stdout = out.stdout
    assert re.search(r"^\s*variant\s+n\s+seeds\s+accuracy\s", stdout, re.MULTILINE), stdout
    check_table(stdout, cells)
    rec = doc["recommendation"]
    assert f"Recommendation ({rec['basis']}): " in stdout
    assert " ".join(rec["headline"].split()[:6]) in " ".join(stdout.split())  # rich wraps long lines
    assert "report: run/report.html" in stdout and "artifact to ship: run/best" in stdout

    # report.html
    from markupsafe import escape

    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="recommendation"' in page and str(escape(rec["headline"])) in page
    assert all(str(escape(c["variant"])) in page for c in cells)

    # best/: the recommended cell's artifact, byte for byte, plus the note; no other cell's
    assert doc["best"]["cell_key"] == rec["cell_key"]
    chosen = next(c for c in cells if c["key"] == rec["cell_key"])
    assert doc["best"]["source"] == chosen["artifact_dir"]

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    best = files(run / "best")
    note = best.pop("BEST.md" if "BEST.md" in best else "README.md").decode()
    assert rec["cell_key"][:12] in note and chosen["variant"] in note
    assert best == files(run / chosen["artifact_dir"])
    assert all(best != files(run / c["artifact_dir"]) for c in cells if c["key"] != chosen["key"])

    # `adaptlab predict best` gives the recommended cell's own test predictions
    with RunStore(run, create=False) as store:
        stored = store.predictions(rec["cell_key"])
    assert len(stored) == 12
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": r.example_id, "text": r.input}) + "\n"
                                               for r in stored), encoding="utf-8")
    pred = adaptlab("predict", "best", "--input", "../in.jsonl", "--output", "../preds.jsonl", cwd=run)
    assert pred.returncode == 0, pred.stderr[-3000:]
    got = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(g["id"], g["pred"]) for g in got] == [(r.example_id, r.pred) for r in stored]


# -- 3. a generation task on the real model ---------------------------------------------------------------------

GENERATION_EXPERIMENT = """\
name: gen
task: {task}
model: smollm2-135m-instruct
train_sizes: [2]
seeds: [0]
limit: 4
evaluation: {{latency_sample: 0, throughput_batch_sizes: [], throughput_sample: 0}}
strategies:
  - zero_shot
  - name: few_shot
    options: {{k: 2}}
scenario: {{queries_per_month: 100000, price_per_hour: 0.10, accuracy_target: 5}}
"""


@pytest.mark.integration
def test_compare_on_a_generation_task_speaks_chrf(default_loaded, tasks_dir: Path, shared_data: Path,
                                                  tmp_path: Path) -> None:
    """English -> French captions (Multi30k), zero-shot and 2-shot on 4 test captions. Measured on 5 captions:
    chrF 9.4 [2.1, 13.6] and 12.2 [11.1, 13.3]; a 0..1 metric (accuracy) would never pass 1."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(GENERATION_EXPERIMENT.format(task=tasks_dir / "multi30k-en-fr.yaml"), encoding="utf-8")
    out = adaptlab("compare", str(exp), "--out", "run", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    doc = json.loads((run / "results.json").read_text(encoding="utf-8"))
    cells = doc["cells"]
    assert sorted(c["variant"] for c in cells) == ["few_shot k=2", "zero_shot"]
    for c in cells:  # chrF on its own 0..100 scale, with a real interval, in every cell
        assert c["status"] == "done" and c["metric"] == "chrf" and c["n_test"] == 4, c
        assert 0 <= c["ci_low"] < c["ci_high"] <= 100 and c["ci_low"] <= c["value"] <= c["ci_high"], c
        assert c["value"] > 1, c

    stdout = out.stdout
    assert re.search(r"^\s*variant\s+n\s+seeds\s+chrf\s", stdout, re.MULTILINE), stdout
    check_table(stdout, cells)
    assert "accuracy" not in stdout.lower()

    rec = doc["recommendation"]
    chosen = next(c for c in cells if c["key"] == rec["cell_key"])
    words = [rec["headline"], *rec["reasons"], *rec["would_change"], rec["evidence"]]
    assert not [w for w in words if "accuracy" in w.lower()], words
    assert f"({chosen['value']:.1f} chrf)" in rec["headline"], rec["headline"]  # chrF's precision, not 0.000
    interval = f"{chosen['value']:.1f} chrf [{chosen['ci_low']:.1f}, {chosen['ci_high']:.1f}]"
    assert any(interval in r for r in rec["reasons"]), rec["reasons"]
    assert "Target 5.0 chrf: met by" in " ".join(rec["reasons"])  # the target read on chrF's scale
    page = (run / "report.html").read_text(encoding="utf-8")
    summary = (run / "summary.md").read_text(encoding="utf-8")
    assert "chrf target: 5.000" in page and "accuracy target" not in page
    assert "chrf target 5" in summary and "accuracy" not in summary.lower()
