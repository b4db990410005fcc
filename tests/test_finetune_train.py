"""Fine-tuning end to end on the tiny random Llama: learning, determinism, save/load round trips, run_single."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptlab.errors import ResourceError, ConfigError
from adaptlab.strategies import (EmbeddingProbeConfig, FitContext, FullConfig, IA3Config, LoraConfig,
                                 PromptTuningConfig)
from test_finetune_toy import one_thread_torch, write_toy_task


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from adaptlab.data import load_splits, load_task

    task = load_task(write_toy_task(tmp_path_factory.mktemp("toy")))
    return task, load_splits(task)


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_torch)


def _train(**kw) -> dict:
    """Training fields of a method config (they sit flat beside the method's own options)."""
    base = dict(batch_size=8, progress=False, log_every=1, save_every=0, eval_limit=8)
    base.update(kw)
    return base


def _ctx(model, work_dir: Path, *, seed: int = 0, resume: bool = False) -> FitContext:
    return FitContext.of(model, seed=seed, work_dir=work_dir, resume=resume)


def _losses(adapted) -> list[float]:
    return [h["loss"] for h in adapted.history if "loss" in h]


def test_loss_decreases_and_same_seed_gives_same_run(toy, tiny_loaded, tmp_path: Path) -> None:
    task, splits = toy
    snapshot = {k: v.clone() for k, v in tiny_loaded.model.state_dict().items()}
    cfg = FullConfig(**_train(max_steps=8, learning_rate=3e-2, eval_every=4, eval_limit=8))
    a = cfg.fit(task, splits.train, splits.dev, _ctx(tiny_loaded, tmp_path / "a"))
    b = cfg.fit(task, splits.train, splits.dev, _ctx(tiny_loaded, tmp_path / "b"))
    la, lb = _losses(a), _losses(b)
    assert len(la) == 8 and la == lb  # deterministic
    assert sum(la[-3:]) / 3 < sum(la[:3]) / 3 - 2.0  # learns (log 49152 ~ 10.8 -> well below)
    evals = [h for h in a.history if h.get("eval")]
    assert evals[-1]["dev_loss"] < evals[0]["dev_loss"] < 10.5
    assert a.train_cost["trainable_params"] == a.train_cost["total_params"] == a.base_params
    assert a.train_cost["flops"] == 6 * a.base_params * a.train_cost["tokens"]
    c = FullConfig(**_train(max_steps=2, learning_rate=3e-2, eval_metric=False)).fit(
        task, splits.train, splits.dev, _ctx(tiny_loaded, tmp_path / "c", seed=1))
    assert _losses(c) != la[:2]  # another seed, another run
    # the caller's model is never modified
    import torch

    assert all(torch.equal(v, snapshot[k]) for k, v in tiny_loaded.model.state_dict().items())


METHODS = {  # method config class and its own options (training fields are added per test)
    "lora": (LoraConfig, {"rank": 4}),
    "ia3": (IA3Config, {}),
    "prompt_tuning": (PromptTuningConfig, {"num_virtual_tokens": 4}),
    "full": (FullConfig, {}),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_fit_save_load_predict_round_trip(method, toy, tiny_loaded, tmp_path: Path) -> None:
    from adaptlab.strategies import load_adapted
    from adaptlab.strategies.finetune.adapted import FinetunedAdapted

    task, splits = toy
    cls, options = METHODS[method]
    adapted = cls(**options, **_train(max_steps=2, learning_rate=5e-2)).fit(
        task, splits.train[:16], splits.dev[:8], _ctx(tiny_loaded, tmp_path / "work"))
    examples = splits.test[:6]
    before = adapted.predict(examples)
    saved = adapted.save(tmp_path / "art")
    files = {p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()}
    assert "adapted.json" in files and not any(f.endswith((".bin", ".pt", ".pkl", ".pickle")) for f in files)
    assert any(f.endswith(".safetensors") for f in files)
    loaded = load_adapted(saved)
    assert isinstance(loaded, FinetunedAdapted) and loaded.method == method
    assert loaded.model_name == "tiny-random-llama"
    after = loaded.predict(examples)
    assert [p.pred for p in after] == [p.pred for p in before]
    for x, y in zip(before, after):
        assert list(y.logprobs.values()) == pytest.approx(list(x.logprobs.values()), abs=1e-4)
    if method == "prompt_tuning":
        assert after[0].prompt_tokens == before[0].prompt_tokens and after[0].extra["virtual_tokens"] == 4
        with pytest.raises(ConfigError):  # merging is the config option `merge`; a soft prompt cannot merge
            cls(**options, merge=True)
    if method in ("lora", "ia3"):
        adapted.merge = True  # what `merge: true` in the config sets
        merged = load_adapted(adapted.save(tmp_path / "merged"))
        assert merged.weights == "merged" and (tmp_path / "merged" / "merged" / "model.safetensors").is_file()
        for x, y in zip(before, merged.predict(examples)):
            assert list(y.logprobs.values()) == pytest.approx(list(x.logprobs.values()), abs=1e-3)
    # the adaptation changed the model: scores differ from the untouched base model's
    from adaptlab.lm.hf import HFLM

    base = adapted.prompt.bound(HFLM(tiny_loaded.model, tiny_loaded.tokenizer)).predict(examples)
    flat = [v for p in before for v in p.logprobs.values()]
    assert [v for p in base for v in p.logprobs.values()] != pytest.approx(flat, abs=1e-5)
    cost = loaded.cost()
    assert cost["train"]["trainable_params"] > 0 and cost["train"]["flops"] > 0


def test_embedding_probe_round_trip(toy, tmp_path: Path) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from adaptlab.strategies import load_adapted

    task, splits = toy
    probe = EmbeddingProbeConfig().fit(task, splits.train, splits.dev, FitContext.of("tiny-random-llama"))
    assert probe.fit_info["dev_accuracy"] >= 0.75  # colours vs animals is easy for MiniLM
    before = probe.predict(splits.test)
    loaded = load_adapted(probe.save(tmp_path / "probe"))
    assert not list((tmp_path / "probe").glob("*.pkl"))
    after = loaded.predict(splits.test)
    assert [p.pred for p in after] == [p.pred for p in before]
    # the stored arithmetic is scikit-learn's predict_proba
    x = loaded.lm.embed(loaded.texts(splits.test))
    y = [task.label_of(ex) for ex in splits.train]
    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(
        probe.lm.embed(probe.texts(splits.train)), y)
    expected = clf.predict_proba(x)
    got = np.array([[p.scores[c] for c in clf.classes_] for p in after])
    assert np.allclose(got, expected, atol=1e-6)
    assert after[0].prompt_tokens > 0 and loaded.cost()["train"]["trainable_params"] == 384 + 1


def test_run_single_writes_artifact_metrics_and_card(toy, tmp_path: Path) -> None:
    from adaptlab.experiment.single import SingleRun, run_single
    from adaptlab.strategies import ModelPool, load_adapted

    task, splits = toy
    out = tmp_path / "run"
    options = {"batch_size": 8, "rank": 2, "save_every": 1, "eval_limit": 4, "epochs": 1, "merge": True}
    result = run_single(task, "lora", options, ModelPool.of("tiny-random-llama"),
                        SingleRun(out_dir=out, n_train=16, seed=0, limit=6, progress=False))
    assert result is not None and result.n == 6 and result.strategy == "lora"
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["schema"] == "adaptlab.metrics/1" and doc["metric"]["name"] == "accuracy"
    train = doc["cost"]["train"]
    for key in ("seconds", "flops", "peak_memory_bytes", "trainable_params", "artifact_bytes", "tokens"):
        assert train[key] and train[key] > 0, key
    # rank x (in + out) of q (64->64), k and v (64->32), o (64->64), in 2 layers
    assert train["trainable_params"] == 2 * ((64 + 64) + 2 * (64 + 32) + (64 + 64)) * 2
    assert doc["cost"]["query"]["flops"] > 0 and doc["cost"]["query"]["latency_s"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["rank"] == 2 and config["config"]["train"]["batch_size"] == 8
    card = (out / "README.md").read_text()
    assert "tiny-random-llama" in card and "FLOPs formula" in card and "4N + 6T" in card
    assert not (out / "checkpoints").exists() and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert load_adapted(out).weights == "merged"
    # an earlier run is kept: a second run into its folder is refused (unless --force)
    with pytest.raises(ResourceError, match="--force"):
        run_single(task, "lora", {"epochs": 3}, ModelPool.of("tiny-random-llama"),
                   SingleRun(out_dir=out, n_train=16, progress=False))
    # an interrupted run's checkpoints are not silently thrown away: --resume continues, --force starts over
    from adaptlab.files import partial_dir

    (partial_dir(tmp_path / "again") / "checkpoints" / "step-000001").mkdir(parents=True)
    with pytest.raises(ResourceError, match="--resume"):
        run_single(task, "lora", {"epochs": 3}, ModelPool.of("tiny-random-llama"),
                   SingleRun(out_dir=tmp_path / "again", n_train=16, progress=False))
    with pytest.raises(ConfigError):
        run_single(task, "prompt_tuning", {"merge": True}, ModelPool.of("tiny-random-llama"),
                   SingleRun(out_dir=tmp_path / "x", progress=False))


def test_gradient_accumulation_equals_the_larger_batch(toy, tiny_loaded, tmp_path: Path) -> None:
    import torch

    task, splits = toy
    common = dict(max_steps=3, learning_rate=1e-2, group_by_length=False, eval_metric=False, keep_best=False)
    big = FullConfig(**_train(batch_size=8, grad_accum=1, **common)).fit(
        task, splits.train, splits.dev[:4], _ctx(tiny_loaded, tmp_path / "big"))
    acc = FullConfig(**_train(batch_size=4, grad_accum=2, **common)).fit(
        task, splits.train, splits.dev[:4], _ctx(tiny_loaded, tmp_path / "acc"))
    assert _losses(acc) == pytest.approx(_losses(big), rel=1e-4)
    for (name, p), q in zip(big.model.named_parameters(), acc.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    assert acc.train_cost["tokens"] == big.train_cost["tokens"]


def test_bf16_checkpointing_cosine_and_early_stopping(toy, tiny_loaded, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    task, splits = toy
    # a learning rate this large makes the dev loss worse after the first evaluation
    cfg = FullConfig(**_train(max_steps=8, learning_rate=30.0, eval_every=1, early_stopping_patience=2,
                              eval_metric=False, mixed_precision="bf16", gradient_checkpointing=True,
                              schedule="cosine", warmup_ratio=0.0, max_grad_norm=None))
    a = cfg.fit(task, splits.train, splits.dev[:8], _ctx(tiny_loaded, tmp_path))
    evals = [h for h in a.history if h.get("eval")]
    assert a.train_cost["stopped_early"] and len(evals) < 8
    best = min(evals, key=lambda h: h["dev_loss"])
    assert a.train_cost["best_step"] == best["step"] and a.final_dev["step"] == best["step"]
    saved = load_file(str(tmp_path / "best" / "trainable.safetensors"))
    for name, p in a.model.named_parameters():  # the best weights were restored at the end
        assert (p.detach() == saved[name]).all(), name
    assert not a.model.is_activation_checkpointing and a.model.config.use_cache


def test_generation_task_trains_on_reference_plus_eos(tiny_loaded, tmp_path: Path) -> None:
    from test_finetune_toy import write_toy_generation_task

    from adaptlab.data import load_splits, load_task
    from adaptlab.strategies import load_adapted
    from adaptlab.strategies.finetune.batching import encode_pairs
    from adaptlab.strategies.finetune.gradient import training_pairs, zero_shot_prompt

    task = load_task(write_toy_generation_task(tmp_path / "task"))
    splits = load_splits(task)
    pairs = training_pairs(zero_shot_prompt(task, "tiny-random-llama"), task, splits.train[:2])
    assert pairs[0].answer == " red"
    enc = encode_pairs(tiny_loaded.tokenizer, pairs, max_length=64, eos=True)[0]
    assert enc.labels[-1] == tiny_loaded.tokenizer.eos_token_id
    adapted = LoraConfig(rank=2, **_train(max_steps=2, eval_limit=2)).fit(
        task, splits.train[:8], splits.dev[:4], _ctx(tiny_loaded, tmp_path / "w"))
    assert "dev_metric" in adapted.final_dev
    preds = load_adapted(adapted.save(tmp_path / "art")).predict(splits.test[:2])
    assert all(isinstance(p.raw, str) for p in preds)
    with pytest.raises(ConfigError, match="classification"):
        EmbeddingProbeConfig().fit(task, splits.train, splits.dev, FitContext.of("tiny-random-llama"))


def test_resume_refuses_changed_settings(toy, tiny_loaded, tmp_path: Path) -> None:
    task, splits = toy
    cfg = LoraConfig(rank=2, **_train(max_steps=2, save_every=1, eval_metric=False))
    cfg.fit(task, splits.train, splits.dev[:4], _ctx(tiny_loaded, tmp_path))
    assert (tmp_path / "checkpoints" / "step-000001" / "state.json").is_file()
    with pytest.raises(ConfigError, match="batch_size"):
        LoraConfig(rank=2, **_train(max_steps=2, save_every=1, eval_metric=False, batch_size=4)).fit(
            task, splits.train, splits.dev[:4], _ctx(tiny_loaded, tmp_path, resume=True))
    resumed = cfg.fit(task, splits.train, splits.dev[:4], _ctx(tiny_loaded, tmp_path, resume=True))
    assert resumed.train_cost["resumed_from"] == [1] and resumed.train_cost["steps"] == 2
