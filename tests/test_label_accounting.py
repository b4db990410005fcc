"""Issue 14: every label counted, the fine-tune arm at full strength, chat as the default prompt format.

* A fine-tune that picks its checkpoint on dev counts that dev sample (fit -> evaluate -> record -> store), and
  ``select_on_dev: false`` reads no dev example at all.
* ``min_steps`` raises the epochs of a small training set (whole epochs).
* ``format: auto`` is chat exactly when the LM's tokenizer has a chat template; fine-tunes keep plain.
* Balanced selection of fewer demonstrations than classes warns (and selects as before).
* Cell keys change only where a new default changes the cell's result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from adaptlab.experiment import ExperimentConfig, expand_cells
from adaptlab.experiment.grid import Cell, cell_key
from adaptlab.strategies import (FewShotConfig, FitContext, LoraConfig, ManyShotConfig, ModelPool,
                                 PromptSearchConfig, ZeroShotConfig, load_adapted)
from adaptlab.strategies.finetune.train_args import TrainSettings
from fakes import ScriptedLM, chatml_tokenizer, make_examples, sentiment_task
from test_finetune_toy import one_thread_torch, write_toy_task

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_torch)

KEYWORDS = {"negative": ["bad", "awful"], "positive": ["good", "great"], "neutral": ["fine", "okay"]}
TRAIN = make_examples([("good film", "1"), ("bad film", "0"), ("fine film", "2"), ("great plot", "1"),
                       ("awful plot", "0"), ("okay plot", "2")])
DEV = make_examples([("good", "1"), ("bad", "0"), ("okay", "2")], "dev")


def three_class_task():
    return sentiment_task(labels={"0": "negative", "1": "positive", "2": "neutral"})


class CountingDev(Sequence):
    """A dev split that counts every example read from it (``len`` reads none)."""

    def __init__(self, items: Sequence) -> None:
        self.items = list(items)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        self.reads += 1
        return self.items[i]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from adaptlab.data import load_splits, load_task

    task = load_task(write_toy_task(tmp_path_factory.mktemp("toy"), n_train=16, n_dev=120, n_test=8))
    splits = load_splits(task)
    assert len(splits.dev) == 120
    return task, splits


def _lora(**kw) -> dict:
    base = dict(rank=2, batch_size=8, progress=False, log_every=1, save_every=0, learning_rate=1e-2)
    return {**base, **kw}


# -- fine-tune label accounting ----------------------------------------------------------------------------
def test_keep_best_cell_counts_its_dev_sample_end_to_end(toy, tiny_loaded, tmp_path: Path) -> None:
    """keep_best with eval_limit=100 on a 120-example dev split: labels_used = 16 + 100, through the evaluator,
    the store's record, the store itself, and the saved artifact (also one saved before labels were counted)."""
    from adaptlab.experiment.cells import CellInputs, CellWork, fit_and_evaluate, to_record
    from adaptlab.experiment.store import RunStore

    task, splits = toy
    options = _lora(max_steps=2, eval_limit=100)
    assert LoraConfig(**options).keep_best and LoraConfig(**options).select_on_dev  # the defaults under test
    out = tmp_path / "cell"
    result = fit_and_evaluate(CellWork("lora", options, splits.train, 0, out),
                              CellInputs(task, list(splits.train), list(splits.dev), list(splits.test)),
                              ModelPool.of(tiny_loaded))
    assert result is not None and result.cost["labels"] == {"train": 16, "dev": 100}
    assert json.loads((out / "metrics.json").read_text())["cost"]["labels"] == {"train": 16, "dev": 100}
    evals = [h for h in (json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()) if h.get("eval")]
    assert evals and all("dev_metric" in h for h in evals)  # the dev sample was scored and chose the weights

    cell = Cell("c" * 64, "lora", options, 16, 0, "lora")
    rec, rows, doc = to_record(cell, result, "cells/cccccccccccc")
    assert rec.labels_used == 116 and rec.labels == 116
    with RunStore(tmp_path / "run") as store:
        store.put_cell(rec, rows, doc)
    with RunStore(tmp_path / "run", create=False) as store:
        (stored,) = store.cells()
    assert stored.labels_used == 116 and stored.labels == 116

    saved = json.loads((out / "adapted.json").read_text())
    assert saved["train"]["labels"] == {"train": 16, "dev": 100}
    assert load_adapted(out).cost()["labels"] == {"train": 16, "dev": 100}
    del saved["train"]["labels"]  # as an artifact saved before labels were counted
    (out / "adapted.json").write_text(json.dumps(saved))
    assert load_adapted(out).cost()["labels"] == {"train": 16, "dev": 100}  # from its train_args + n_dev


def test_select_on_dev_false_reads_no_dev_example(toy, tiny_loaded, tmp_path: Path) -> None:
    from adaptlab.evaluate import evaluate
    from adaptlab.experiment.cells import to_record

    task, splits = toy
    dev = CountingDev(splits.dev)
    cfg = LoraConfig(**_lora(max_steps=2, eval_limit=100, select_on_dev=False))
    adapted = cfg.fit(task, splits.train, dev, FitContext.of(tiny_loaded, work_dir=tmp_path / "w"))
    assert dev.reads == 0
    assert not [h for h in adapted.history if h.get("eval")] and adapted.final_dev == {}
    assert adapted.train_cost["steps"] == 2 and adapted.train_cost["best_step"] is None  # the last weights
    assert adapted.cost()["labels"] == {"train": 16, "dev": 0}
    result = evaluate(adapted, task, splits.test)
    rec, _, _ = to_record(Cell("d" * 64, "lora", cfg.to_dict(), 16, 0, "lora"), result, "cells/d")
    assert rec.labels_used == 16


def test_logged_only_dev_evaluation_counts_no_dev_labels() -> None:
    """Dev labels count when they choose the weights: keep_best or early stopping (and select_on_dev)."""
    from adaptlab.strategies.finetune.adapted import recorded_labels
    from adaptlab.strategies.finetune.gradient import dev_labels_used

    assert dev_labels_used(TrainSettings(), 100) == 100
    assert dev_labels_used(TrainSettings(keep_best=False), 100) == 0  # evaluations only logged
    assert dev_labels_used(TrainSettings(keep_best=False, early_stopping_patience=2), 100) == 100
    assert dev_labels_used(TrainSettings(select_on_dev=False, early_stopping_patience=2), 100) == 0
    # an old artifact's recorded arguments (no select_on_dev key): the dev sample is eval_limit of n_dev
    assert recorded_labels({"keep_best": True, "eval_limit": 4}, 16, 59) == {"train": 16, "dev": 4}
    assert recorded_labels({"keep_best": True, "eval_limit": None}, 16, 59) == {"train": 16, "dev": 59}
    assert recorded_labels({"keep_best": False}, 16, 59) == {"train": 16, "dev": 0}
    assert recorded_labels({"keep_best": True, "eval_limit": 4}, 16, 0) == {"train": 16, "dev": 0}


# -- min_steps ---------------------------------------------------------------------------------------------
def test_min_steps_plan() -> None:
    s = TrainSettings()
    assert s.min_steps == 50 and s.epochs == 3
    assert s.steps_per_epoch(16) == 2 and s.planned_epochs(2) == 25 and s.planned_steps(2) == 50
    assert s.planned_epochs(8) == 7 and s.planned_steps(8) == 56  # n=64: whole epochs, so 56 >= 50
    assert s.planned_epochs(32) == 3 and s.planned_steps(32) == 96  # enough already
    assert TrainSettings(min_steps=None).planned_steps(2) == 6
    assert TrainSettings(max_steps=4).planned_steps(2) == 4  # max_steps decides
    assert TrainSettings(grad_accum=2).steps_per_epoch(256) == 16


def test_min_steps_raises_two_steps_to_whole_epochs(toy, tiny_loaded, tmp_path: Path) -> None:
    """16 examples at batch 8, 1 epoch = 2 steps; min_steps=5 trains ceil(5/2) = 3 epochs = 6 steps."""
    task, splits = toy
    cfg = LoraConfig(**_lora(epochs=1, min_steps=5, eval_limit=4, eval_metric=False))
    adapted = cfg.fit(task, splits.train, splits.dev, FitContext.of(tiny_loaded, work_dir=tmp_path / "w"))
    cost = adapted.train_cost
    assert cost["steps"] == cost["total_steps"] == 6 >= 5
    assert cost["epochs_planned"] == cost["epochs_completed"] == 3
    assert [h["step"] for h in adapted.history if "loss" in h] == [1, 2, 3, 4, 5, 6]
    assert [h["step"] for h in adapted.history if h.get("eval")] == [2, 4, 6]  # one evaluation per epoch


# -- format auto -------------------------------------------------------------------------------------------
def _lm(tokenizer=None) -> ScriptedLM:
    return ScriptedLM(KEYWORDS, tokenizer=tokenizer)


def test_format_auto_is_chat_with_a_chat_template_and_plain_otherwise(tmp_path: Path) -> None:
    task = three_class_task()
    assert ZeroShotConfig().format == "auto"
    chat_lm = _lm(chatml_tokenizer())
    chat = ZeroShotConfig().fit(task, TRAIN, DEV, FitContext.of(chat_lm))
    assert chat.fmt.style == "chat" and chat.fit_info["format_used"] == "chat"
    assert chat.context("x", [], chat_lm.tokenizer).startswith("<|im_start|>system")
    chat.save(tmp_path / "chat")
    assert json.loads((tmp_path / "chat" / "adapted.json").read_text())["format"]["style"] == "chat"
    assert load_adapted(tmp_path / "chat", lambda name: chat_lm).fmt.style == "chat"

    no_template = chatml_tokenizer()
    no_template.chat_template = None
    for lm in (_lm(), _lm(no_template)):
        plain = ZeroShotConfig().fit(task, TRAIN, DEV, FitContext.of(lm))
        assert plain.fmt.style == "plain" and plain.fit_info["format_used"] == "plain"
    # a written format is kept whatever the tokenizer
    assert ZeroShotConfig(format="plain").fit(task, TRAIN, DEV, FitContext.of(chat_lm)).fmt.style == "plain"


def test_every_prompt_strategy_resolves_auto() -> None:
    task, lm = three_class_task(), _lm(chatml_tokenizer())
    fits = [FewShotConfig(k=3, selection="balanced").fit(task, TRAIN, DEV, FitContext.of(lm)),
            FewShotConfig(k=3, calibrate=True).fit(task, TRAIN, DEV, FitContext.of(lm)),
            ManyShotConfig(max_k=3).fit(task, TRAIN, DEV, FitContext.of(lm)),
            PromptSearchConfig(k=3, max_candidates=2, n_demo_sets=1).fit(task, TRAIN, DEV, FitContext.of(lm))]
    for adapted in fits:
        assert adapted.fmt.style == "chat" and adapted.fit_info["format_used"] == "chat", adapted.strategy
        assert adapted.predict(DEV)  # the chat prompt renders and scores


def test_fine_tune_prompt_keeps_plain_by_default() -> None:
    from adaptlab.strategies.finetune.gradient import zero_shot_prompt

    task, tok = three_class_task(), chatml_tokenizer()
    assert zero_shot_prompt(task, "m", {}, tok).fmt.style == "plain"
    assert zero_shot_prompt(task, "m", None, tok).config["format"] == "plain"
    assert zero_shot_prompt(task, "m", {"format": "auto"}, tok).fmt.style == "chat"
    assert zero_shot_prompt(task, "m", {"format": "auto"}, None).fmt.style == "plain"


# -- balanced selection with fewer demonstrations than classes ---------------------------------------------
def test_balanced_k_below_the_class_count_warns_and_selects_as_before(caplog) -> None:
    from adaptlab.strategies.prompt.common import demo_pool
    from adaptlab.strategies.prompt.selection import select_balanced

    task, lm = three_class_task(), _lm()
    message = "k=2 balanced shows only 2 of 3 classes; use k >= 3"
    with caplog.at_level(logging.WARNING):
        adapted = FewShotConfig(k=2, selection="balanced").fit(task, TRAIN, DEV, FitContext.of(lm, seed=1))
    assert adapted.fit_info["warnings"] == [message]
    assert message in caplog.text
    assert adapted.demos == select_balanced(demo_pool(task, TRAIN), 2, seed=1, labels=task.label_keys)
    assert "warnings" not in FewShotConfig(k=3, selection="balanced").fit(task, TRAIN, DEV, FitContext.of(lm)).fit_info
    assert "warnings" not in FewShotConfig(k=2).fit(task, TRAIN, DEV, FitContext.of(lm)).fit_info  # random
    search = PromptSearchConfig(k=2, max_candidates=2, n_demo_sets=1).fit(task, TRAIN, DEV, FitContext.of(lm))
    assert search.fit_info["warnings"] == [message]


# -- cell keys ---------------------------------------------------------------------------------------------
def _cells(strategies: list, **kw) -> dict[tuple[str, int], Cell]:
    cfg = ExperimentConfig(name="t", task="builtin:demo", model="tiny-random-llama", seeds=[0],
                           train_sizes=[16, 256], strategies=strategies, **kw)
    cells = expand_cells(cfg, 300)
    assert all(c.key == cell_key(c.payload) for c in cells)
    return {(c.variant, c.n_train): c for c in cells}


def test_cell_key_markers_only_where_a_new_default_changes_the_result() -> None:
    cells = _cells(["zero_shot",
                    {"name": "zero_shot", "label": "zs plain", "options": {"format": "plain"}},
                    {"name": "few_shot", "options": {"k": 2, "format": "chat"}},
                    {"name": "many_shot", "label": "many"},
                    "lora",
                    {"name": "lora", "label": "accum", "options": {"grad_accum": 2}},
                    {"name": "lora", "label": "max", "options": {"max_steps": 2}},
                    {"name": "lora", "label": "nomin", "options": {"min_steps": None}},
                    {"name": "lora", "label": "min10", "options": {"min_steps": 10}},
                    "embedding_probe", "setfit"])
    markers = {name: {k: c.payload[k] for k in ("format", "min_steps") if k in c.payload}
               for name, c in cells.items()}
    assert markers == {
        ("zero_shot", 0): {"format": "auto"},  # format unwritten: auto (chat on this model) changes the result
        ("zs plain", 0): {},  # written: already in the options
        ("few_shot k=2 format=chat", 2): {},
        ("many", 16): {"format": "auto"}, ("many", 256): {"format": "auto"},
        ("lora", 16): {"min_steps": 50},  # 2 steps x 3 epochs = 6 < 50
        ("lora", 256): {},  # 32 x 3 = 96 >= 50: unchanged, same key as before
        ("accum", 16): {"min_steps": 50}, ("accum", 256): {"min_steps": 50},  # 16 x 3 = 48 < 50
        ("max", 16): {}, ("max", 256): {},  # max_steps decides
        ("nomin", 16): {}, ("nomin", 256): {}, ("min10", 16): {}, ("min10", 256): {},
        ("embedding_probe", 16): {}, ("embedding_probe", 256): {},
        ("setfit", 16): {}, ("setfit", 256): {},
    }
    # a marked payload is the old payload plus the marker, nothing else moved
    marked, plain = cells[("lora", 16)].payload, cells[("lora", 256)].payload
    assert set(marked) - {"min_steps"} == set(plain) and marked["options"] == plain["options"]
    old = {k: v for k, v in cells[("zero_shot", 0)].payload.items() if k != "format"}
    assert cell_key(old) != cells[("zero_shot", 0)].key and set(old) == set(plain)


def test_experiment_epochs_count_toward_min_steps() -> None:
    """The experiment's ``epochs`` (a default the fine-tunes take) decides the planned steps: 25 x 2 = 50."""
    assert "min_steps" not in _cells(["lora"], epochs=25)[("lora", 16)].payload
    assert _cells(["lora"], epochs=24)[("lora", 16)].payload["min_steps"] == 50
