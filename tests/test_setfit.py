"""SetFit (contrastive fine-tuning of MiniLM + a logistic-regression head) on the built-in demo task: it beats the
frozen embedding probe with ~8 examples per class, round-trips through its artifact, leaves the shared embedder
untouched, refuses what it cannot do in one line, and runs as a cell of a compare experiment."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from adaptlab.errors import AdaptlabError, ConfigError, DataError
from adaptlab.strategies import EmbeddingProbeConfig, FitContext, ModelPool, SetFitConfig
from test_finetune_toy import one_thread_torch, write_toy_generation_task

REPO = Path(__file__).resolve().parents[1]
SEED = 0
N_TRAIN = 56  # ~8 examples per class of the demo's 7 intents
# The SetFit defaults (20 pair rounds, lr 2e-5) take minutes on a shared CPU; one round with a larger learning rate
# keeps the test to a few optimizer steps and still moves the encoder well past the frozen probe.
SMALL = {"num_iterations": 1, "learning_rate": 1e-4, "max_length": 64}
MARGIN = 0.03  # measured (seed 0, 56 examples, 196 test examples): probe 0.837, setfit 0.888

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_torch)


@pytest.fixture(scope="module")
def demo():
    from adaptlab.data import builtin_task, load_splits, stratified_order

    task = builtin_task("demo")
    splits = load_splits(task)
    train = stratified_order(splits.train, seed=SEED, label_of=task.label_of)[:N_TRAIN]
    return task, splits, train


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    """One pool, so every fit of this module shares one loaded MiniLM (as the cells of a run do)."""
    return ModelPool.of("tiny-random-llama")


@pytest.fixture(scope="module")
def fitted(demo, pool):
    """One SetFit fit on the 56-example subset, with a snapshot of the shared embedder taken before it."""
    task, splits, train = demo
    shared = pool.embedder("minilm-l6")
    snapshot = {k: v.detach().clone() for k, v in shared.model.state_dict().items()}
    adapted = SetFitConfig(**SMALL).fit(task, train, splits.dev, FitContext(models=pool, seed=SEED))
    return adapted, snapshot


def _accuracy(adapted, task, examples) -> float:
    preds = adapted.predict(examples)
    return sum(p.pred == task.label_of(ex) for p, ex in zip(preds, examples)) / len(examples)


def test_defaults_are_setfits() -> None:
    cfg = SetFitConfig()
    assert (cfg.num_iterations, cfg.epochs, cfg.learning_rate, cfg.batch_size) == (20, 1, 2e-5, 16)
    assert (cfg.C, cfg.max_iter, cfg.embedder) == (1.0, 2000, "minilm-l6")
    with pytest.raises(ConfigError, match="num_iterations"):
        SetFitConfig.parse({"num_iterations": 0})
    assert cfg.learns_labels() and cfg.label_use().mode == "train_sizes"
    with pytest.raises(ConfigError, match="batch_size"):
        SetFitConfig.parse({"batch_sise": 8})


def test_pairs_follow_setfit_and_are_seeded() -> None:
    from adaptlab.strategies.finetune.setfit import contrastive_pairs

    labels = ["a", "a", "b", "b", "c"]
    pairs = contrastive_pairs(labels, 3, seed=7)
    assert len(pairs) == 2 * 3 * len(labels)  # one positive and one negative per example per round
    assert pairs == contrastive_pairs(labels, 3, seed=7) and pairs != contrastive_pairs(labels, 3, seed=8)
    for i, j, target in pairs:
        assert (labels[i] == labels[j]) == (target == 1.0)
        assert i != j or labels.count(labels[i]) == 1  # a positive partner is another example when there is one


def test_setfit_beats_the_frozen_probe_with_8_examples_per_class(demo, pool, fitted) -> None:
    task, splits, train = demo
    adapted, _ = fitted
    probe = EmbeddingProbeConfig().fit(task, train, [], FitContext(models=pool, seed=SEED))
    setfit_acc, probe_acc = _accuracy(adapted, task, splits.test), _accuracy(probe, task, splits.test)
    assert setfit_acc >= probe_acc + MARGIN, (setfit_acc, probe_acc)
    info = adapted.fit_info
    assert info["pairs"] == 2 * N_TRAIN and info["n_train"] == N_TRAIN
    assert info["seconds"] < 90, info  # ~15-45 s on 2 shared cores; the budget leaves room for a busy machine
    cost = adapted.cost()["train"]
    n = info["encoder_params"]
    assert cost["flops"] == 6 * n * info["pair_tokens"] + 2 * n * info["embedded_tokens"] > 0
    assert "6 x N_encoder" in cost["flops_formula"] and cost["labels"] == N_TRAIN
    assert cost["trainable_params"] == n + 7 * 384 + 7 and cost["peak_memory_bytes"] > 0


def test_save_load_predict_round_trip(demo, fitted, tmp_path: Path) -> None:
    import numpy as np

    from adaptlab.strategies import load_adapted
    from adaptlab.strategies.finetune.setfit import SetFitAdapted

    task, splits, _ = demo
    adapted, _ = fitted
    examples = splits.test[:24]
    before = adapted.predict(examples)
    saved = adapted.save(tmp_path / "art")
    files = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert {"adapted.json", "head.safetensors", "encoder/model.safetensors"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pickle")) for f in files)
    doc = json.loads((saved / "adapted.json").read_text())
    assert (doc["kind"], doc["model"], doc["config"]["method"]) == ("setfit", "minilm-l6", "setfit")
    assert doc["task"]["type"] == "classification" and len(doc["classes"]) == 7 and doc["fit"]["pairs"] > 0
    loaded = load_adapted(saved)
    assert isinstance(loaded, SetFitAdapted) and loaded.strategy == "setfit"
    after = loaded.predict(examples)
    assert [p.pred for p in after] == [p.pred for p in before]
    got = np.array([list(p.scores.values()) for p in after])
    want = np.array([list(p.scores.values()) for p in before])
    assert np.allclose(got, want, atol=1e-5)
    assert after[0].prompt_tokens == before[0].prompt_tokens > 0
    assert loaded.cost()["train"]["trainable_params"] == adapted.cost()["train"]["trainable_params"]


@pytest.mark.parametrize("key,value", [("encoder", "../elsewhere"), ("head", "/etc/passwd")])
def test_the_loader_refuses_paths_outside_the_artifact(fitted, tmp_path: Path, key: str, value: str) -> None:
    from adaptlab.strategies import load_adapted

    adapted, _ = fitted
    saved = adapted.save(tmp_path / "art")
    doc = json.loads((saved / "adapted.json").read_text())
    doc[key] = value
    (saved / "adapted.json").write_text(json.dumps(doc))
    with pytest.raises(AdaptlabError, match="outside the artifact folder") as err:
        load_adapted(saved)
    assert err.value.field == key


def test_the_shared_embedder_is_unchanged_by_a_fit(pool, fitted) -> None:
    import torch

    adapted, snapshot = fitted
    shared = pool.embedder("minilm-l6")
    assert adapted.lm.embedder.model is not shared.model
    assert all(torch.equal(v, snapshot[k]) for k, v in shared.model.state_dict().items())
    tuned = adapted.lm.embedder.model.state_dict()
    assert any(not torch.equal(tuned[k], v) for k, v in snapshot.items())  # the copy did train


def test_same_seed_same_fit_other_seed_other_fit(demo, pool) -> None:
    import numpy as np

    task, splits, train = demo
    small = train[:14]  # 2 per class: 28 pairs, 2 steps
    fits = [SetFitConfig(**SMALL).fit(task, small, [], FitContext(models=pool, seed=s)) for s in (3, 3, 4)]
    assert np.array_equal(fits[0].coef, fits[1].coef)
    assert fits[0].fit_info["epoch_losses"] == fits[1].fit_info["epoch_losses"]
    assert not np.allclose(fits[0].coef, fits[2].coef)


def test_generation_tasks_and_one_class_data_are_one_line_errors(demo, pool, tmp_path: Path) -> None:
    from adaptlab.data import load_splits, load_task

    gen = load_task(write_toy_generation_task(tmp_path / "gen"))
    ctx = FitContext(models=pool, seed=SEED)
    with pytest.raises(ConfigError) as err:
        SetFitConfig().fit(gen, load_splits(gen).train, [], ctx)
    line = err.value.one_line()
    assert "classification tasks only" in line and "[method]" in line and "\n" not in line
    task, _, train = demo
    one_class = [ex for ex in train if task.label_of(ex) == "refund"]
    with pytest.raises(DataError) as err:
        SetFitConfig().fit(task, one_class, [], ctx)
    line = err.value.one_line()
    assert "at least two labels" in line and "[n_train]" in line and "\n" not in line


EXPERIMENT = """\
name: setfit-cell
task: builtin:demo
model: tiny-random-llama
train_sizes: [16]
seeds: [0]
limit: 20
strategies:
  - name: setfit
    options: {num_iterations: 1, max_length: 64}
  - zero_shot
scenario: {}
"""


def test_setfit_runs_as_a_cell_of_a_compare_experiment(tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPERIMENT, encoding="utf-8")
    out = tmp_path / "run"
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "adaptlab", "compare", str(exp), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    conn = sqlite3.connect(out / "adaptlab.db")
    try:
        rows = conn.execute("SELECT strategy, family, n_train, status, artifact_dir FROM cells "
                            "ORDER BY strategy").fetchall()
    finally:
        conn.close()
    assert [r[:4] for r in rows] == [("setfit", "finetune", 16, "done"), ("zero_shot", "prompt", 0, "done")]
    doc = json.loads((out / rows[0][4] / "adapted.json").read_text())
    assert doc["kind"] == "setfit" and doc["fit"]["pairs"] == 32
    results = json.loads((out / "results.json").read_text())
    assert any(c["strategy"] == "setfit" and c["family"] == "finetune" for c in results["cells"])
