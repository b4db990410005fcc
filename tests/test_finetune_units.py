"""Fine-tuning building blocks: configs, tokenisation vs the scoring path, batching, soft prompts, checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from adaptlab.errors import ConfigError
from adaptlab.strategies import IA3Config, LoraConfig, PromptTuningConfig, get_strategy
from adaptlab.strategies.finetune.batching import (IGNORE_INDEX, LengthGroupedBatches, Pair, answer_window, collate,
                                                   encode_pair, padding_ratio)
from adaptlab.strategies.finetune.train_args import TrainArgs
from test_finetune_toy import one_thread_torch, write_toy_task


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_torch)


def _build(cfg, base):
    """The trainable model for ``cfg`` around ``base`` (seeded as a fit seeds it; ``base`` is modified)."""
    import torch

    torch.manual_seed(0)
    return cfg.build(base, instruction_ids=(), seed=0)


# ----------------------------------------------------------------------------- configs
def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        LoraConfig(rank=0)
    assert e.value.field == "rank"
    with pytest.raises(ConfigError) as e:
        TrainArgs(schedule="exponential")
    assert e.value.field == "schedule"
    with pytest.raises(ConfigError) as e:  # the training fields live on the method's config too
        LoraConfig(schedule="exponential")
    assert e.value.field == "schedule"
    with pytest.raises(ConfigError) as e:
        IA3Config(target_modules=("k_proj",), feedforward_modules=("down_proj",))
    assert e.value.field == "feedforward_modules"


def test_command_line_options_are_read_as_yaml_and_unknown_keys_rejected() -> None:
    """``--set key=value`` text is parsed as YAML scalars (parse_scalar), then validated strictly by the
    method's config, which holds the method and the training fields flat."""
    from adaptlab.cli.app import parse_options
    from adaptlab.config import parse_scalar

    assert parse_scalar("4") == 4 and parse_scalar("3e-4") == 3e-4 and parse_scalar("false") is False
    assert parse_scalar("null") is None and parse_scalar("q_proj, v_proj") == "q_proj, v_proj"
    options = parse_options(["rank=4", "target_modules=q_proj, v_proj", "batch_size=2", "learning_rate=3e-4",
                             "keep_best=false", "max_steps=null"], "--set")
    cfg = get_strategy("lora").parse(options)
    args = cfg.train_args(0, progress=False)
    assert cfg.rank == 4 and cfg.target_modules == ("q_proj", "v_proj")
    assert args.batch_size == 2 and args.learning_rate == 3e-4 and args.keep_best is False
    assert args.max_steps is None
    with pytest.raises(ConfigError) as e:  # strict: a Python string is not an integer
        get_strategy("lora").parse({"rank": "4"})
    assert e.value.field == "rank" and "must be an integer" in e.value.message
    with pytest.raises(ConfigError) as e:
        get_strategy("lora").parse({"rnak": 4})
    assert "rank" in (e.value.hint or "")
    with pytest.raises(ConfigError) as e:
        get_strategy("lorra")
    assert "lora" in (e.value.hint or "")
    with pytest.raises(ConfigError):
        get_strategy("lora").parse(parse_options(["rank=four"], "--set"))
    probe = get_strategy("embedding_probe").parse(parse_options(["C=0.5"], "--set"))
    assert probe.C == 0.5
    with pytest.raises(ConfigError):  # the seed is the run's (FitContext.seed), not a strategy option
        get_strategy("embedding_probe").parse({"C": 0.5, "seed": 3})
    with pytest.raises(ConfigError):  # training options do not apply to the probe
        get_strategy("embedding_probe").parse({"batch_size": 4})


def test_lora_target_module_matching_nothing_is_an_error(tiny_loaded) -> None:
    cfg = LoraConfig(target_modules=("q_proj", "qkv_proj"))
    with pytest.raises(ConfigError) as e:
        _build(cfg, copy.deepcopy(tiny_loaded.model))
    assert "qkv_proj" in e.value.message and e.value.field == "target_modules"
    assert "q_proj" in (e.value.hint or "")  # lists what exists
    with pytest.raises(ConfigError, match="gate"):
        _build(IA3Config(target_modules=("gate",), feedforward_modules=("gate",)), copy.deepcopy(tiny_loaded.model))


# ----------------------------------------------------------------------------- tokenisation = scoring
def _pairs(tmp_path: Path, n: int = 6) -> tuple[list[Pair], object]:
    from adaptlab.data import load_splits, load_task
    from adaptlab.strategies.finetune.gradient import training_pairs, zero_shot_prompt

    task = load_task(write_toy_task(tmp_path))
    zs = zero_shot_prompt(task, "tiny-random-llama")
    return training_pairs(zs, task, load_splits(task).train[:n]), task


def _answer_logprob(model, enc) -> float:
    import torch

    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
    return sum(float(logp[i - 1, t]) for i, t in enumerate(enc.labels) if t != IGNORE_INDEX)


def test_training_tokens_are_what_hflm_scores(tiny_loaded, tmp_path: Path) -> None:
    from adaptlab.lm.base import LoglikelihoodRequest
    from adaptlab.lm.hf import HFLM

    pairs, _ = _pairs(tmp_path)
    assert pairs[0].context.endswith("Word: red\nAnswer:") and pairs[0].answer == " yes"
    tok, model = tiny_loaded.tokenizer, tiny_loaded.model
    lm = HFLM(model, tok)
    scores = lm.loglikelihood([LoglikelihoodRequest(p.context, (p.answer,)) for p in pairs])
    for p, s in zip(pairs, scores):
        enc = encode_pair(tok, p.context, p.answer, max_length=512)
        assert enc.n_answer_tokens == s.token_counts[0]
        assert _answer_logprob(model, enc) == pytest.approx(s.logprobs[0], abs=1e-4)
    # left truncation keeps the answer
    enc = encode_pair(tok, pairs[0].context, pairs[0].answer, max_length=8)
    assert len(enc) == 8 and enc.labels[-1] != IGNORE_INDEX


def test_windowed_left_padded_loss_equals_full_loss(tiny_loaded, tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F

    pairs, _ = _pairs(tmp_path)
    tok, model = tiny_loaded.tokenizer, tiny_loaded.model
    encs = [encode_pair(tok, p.context, p.answer + " indeed", max_length=512) for p in pairs]
    encs[0] = encode_pair(tok, "short", " answer with several tokens", max_length=512)
    right = collate(encs, tok.pad_token_id)
    left = collate(encs, tok.pad_token_id, left=True)
    assert (right["attention_mask"].sum(1) == left["attention_mask"].sum(1)).all()
    with torch.no_grad():
        full = model(input_ids=right["input_ids"], attention_mask=right["attention_mask"],
                     labels=right["labels"]).loss
        k = answer_window(left["labels"])
        logits = model(input_ids=left["input_ids"], attention_mask=left["attention_mask"],
                       position_ids=left["position_ids"], logits_to_keep=k + 1).logits
        windowed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), left["labels"][:, -k:].reshape(-1),
                                   ignore_index=IGNORE_INDEX)
    assert logits.shape[1] == k + 1 < left["input_ids"].shape[1]
    assert float(windowed) == pytest.approx(float(full), rel=1e-5)


# ----------------------------------------------------------------------------- batching
def test_length_grouped_batches_cover_each_epoch_and_split_evenly() -> None:
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 200) for _ in range(203)]
    plan = LengthGroupedBatches(lengths, 8, seed=1)
    e0, e1 = plan.epoch(0), plan.epoch(1)
    assert sorted(i for b in e0 for i in b) == list(range(203))
    assert e0 != e1 and e0 == LengthGroupedBatches(lengths, 8, seed=1).epoch(0)
    assert len(e0) == len(plan) == 26
    plain = LengthGroupedBatches(lengths, 8, seed=1, group_by_length=False).epoch(0)
    assert padding_ratio(e0, lengths) < padding_ratio(plain, lengths) / 3
    assert max(lengths[i] for i in e0[0]) == max(lengths)  # longest batch first
    ranks = [LengthGroupedBatches(lengths, 8, seed=1, num_processes=3, process_index=r).epoch(0) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    assert {i for r in ranks for b in r for i in b} == set(range(203))


# ----------------------------------------------------------------------------- soft prompt through HFLM
def test_soft_prompt_scoring_matches_peft_forward(tiny_loaded, tmp_path: Path) -> None:
    import torch

    from adaptlab.lm.base import LoglikelihoodRequest
    from adaptlab.lm.hf import HFLM

    pairs, _ = _pairs(tmp_path)
    tok = tiny_loaded.tokenizer
    cfg = PromptTuningConfig(num_virtual_tokens=5, init="vocab")
    peft_model = _build(cfg, copy.deepcopy(tiny_loaded.model)).eval()
    reqs = [LoglikelihoodRequest(p.context, (p.answer, " no", " maybe so")) for p in pairs]
    expected = []
    for r in reqs:
        row = []
        for c in r.continuations:
            enc = encode_pair(tok, r.context, c, max_length=512)
            with torch.no_grad():  # peft prepends the virtual tokens in forward and strips nothing
                logits = peft_model(input_ids=torch.tensor([enc.input_ids])).logits[0, 5:]
            logp = torch.log_softmax(logits.float(), -1)
            row.append(sum(float(logp[i - 1, t]) for i, t in enumerate(enc.labels) if t != IGNORE_INDEX))
        expected.append(row)
    net = cfg.scoring_model(peft_model)
    base_scores = HFLM(tiny_loaded.model, tok).loglikelihood(reqs)
    for cache in (True, False):
        got = HFLM(net, tok, prefix_cache=cache, batch_size=4).loglikelihood(reqs)
        for g, e in zip(got, expected):
            assert list(g.logprobs) == pytest.approx(e, abs=1e-4)
    lm = HFLM(net, tok, batch_size=4)
    with lm.keep_prefix():  # one request per call, each reusing the kept prefix (soft prompt included)
        kept = [lm.loglikelihood([r])[0] for r in reqs + reqs[:1]]
    for g, e in zip(kept, expected + expected[:1]):
        assert list(g.logprobs) == pytest.approx(e, abs=1e-4)
    flat = [v for s in got for v in s.logprobs]
    assert [v for s in base_scores for v in s.logprobs] != pytest.approx(flat, abs=1e-3)  # the prompt matters
    # greedy generation sees the soft prompt too: the first token is peft's argmax
    enc = encode_pair(tok, pairs[0].context, pairs[0].answer, max_length=512)
    ctx = [t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE_INDEX]
    with torch.no_grad():
        first = int(peft_model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
    text = HFLM(net, tok).generate([pairs[0].context.rstrip()], max_new_tokens=2)[0]
    assert text.startswith(tok.decode([first], skip_special_tokens=True)[:3])


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_restores_optimizer_and_rng(tmp_path: Path) -> None:
    import random

    import numpy as np
    import torch

    from adaptlab.strategies.finetune.accelerator import new_accelerator
    from adaptlab.strategies.finetune.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    acc = new_accelerator(TrainArgs(device="cpu"))

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        model[0].weight.requires_grad_(False)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return model, opt, sched

    model, opt, sched = make()
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step(), sched.step(), opt.zero_grad()
    for step in (3, 6):
        save_checkpoint(tmp_path, step, model=model, optimizer=opt, scheduler=sched,
                        state={"epoch": 1, "group": 2}, accelerator=acc, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000006"]  # older pruned, no temp left
    after = (torch.rand(3), np.random.rand(), random.random())  # what the saved RNG state draws next
    m2, o2, s2 = make()
    fresh_bias = m2[0].bias.detach().clone()
    state = load_checkpoint(latest_checkpoint(tmp_path), model=m2, optimizer=o2, scheduler=s2, accelerator=acc)
    assert state["step"] == 6 and state["group"] == 2
    assert torch.equal(m2[1].weight, model[1].weight) and not torch.equal(m2[0].bias, fresh_bias)
    assert s2.get_last_lr() == sched.get_last_lr()
    for k, v in opt.state_dict()["state"].items():
        for name, t in v.items():
            assert torch.equal(o2.state_dict()["state"][k][name], t)
    assert torch.equal(torch.rand(3), after[0]) and np.random.rand() == after[1] and random.random() == after[2]
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))
