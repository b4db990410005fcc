"""``many_shot``: as many demonstrations as fit in a share of the context window; label accounting of prompts."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from adaptlab.errors import ConfigError
from adaptlab.strategies import (FewShotConfig, FitContext, ManyShotConfig, PromptSearchConfig, ZeroShotConfig,
                                 get_strategy, load_adapted)
from adaptlab.strategies.prompt.common import demo_pool
from adaptlab.strategies.prompt.many_shot import DEFAULT_CONTEXT, largest_fitting
from adaptlab.strategies.prompt.selection import select_balanced, select_random
from fakes import (SENTIMENT_KEYWORDS, TEST_ROWS, TRAIN_ROWS, KeywordEmbedder, ScriptedLM, chatml_tokenizer,
                   make_examples, sentiment_task)

TRAIN = make_examples(TRAIN_ROWS)
TEST = make_examples(TEST_ROWS, "test")


def scripted(max_length: int | None = 2048, **kw) -> ScriptedLM:
    lm = ScriptedLM(SENTIMENT_KEYWORDS, **kw)
    lm.max_length = max_length
    return lm


def prefix_tokens(adapted, demos, lm) -> int:
    return lm.count_tokens(adapted.context("", demos, getattr(lm, "tokenizer", None)))


def balanced_order(task, train, seed):
    """Every training demonstration in balanced order (what the strategy adds, one by one)."""
    return select_balanced(demo_pool(task, train), len(train), seed=seed, labels=task.label_keys)


# -- the budget ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_length,share", [(60, 0.5), (100, 0.5), (61, 0.5), (90, 0.25), (40, 1.0)])
def test_uses_exactly_the_largest_number_that_fits(max_length, share):
    task, lm = sentiment_task(), scripted(max_length)
    adapted = ManyShotConfig(context_share=share).fit(task, TRAIN, [], FitContext.of(lm, seed=3))
    budget = int(share * max_length)
    k = adapted.fit_info["k_used"]
    full = balanced_order(task, TRAIN, 3)
    assert 0 < k < len(TRAIN) and adapted.demos == full[:k]
    assert adapted.fit_info["prefix_tokens"] == prefix_tokens(adapted, adapted.demos, lm) <= budget
    assert prefix_tokens(adapted, full[:k + 1], lm) > budget  # one more would not fit
    info = adapted.fit_info
    # balanced selection reads every label of the pool to alternate the classes
    assert (info["pool"], info["labels_read"], info["budget_tokens"]) == (len(TRAIN), len(TRAIN), budget)


def test_budget_grows_with_the_share_and_defaults_to_2048():
    task = sentiment_task()
    used = [ManyShotConfig(context_share=s).fit(task, TRAIN, [], FitContext.of(scripted(100))).fit_info["k_used"]
            for s in (0.2, 0.35, 0.5)]
    assert used[0] < used[1] < used[2]
    unknown = ManyShotConfig().fit(task, TRAIN, [], FitContext.of(scripted(None)))
    assert unknown.fit_info["budget_tokens"] == DEFAULT_CONTEXT // 2 and len(unknown.demos) == len(TRAIN)


def test_nothing_fits_warns_and_keeps_the_instruction(caplog):
    task, lm = sentiment_task(), scripted(6)  # budget 3 tokens: the instruction alone takes more
    with caplog.at_level(logging.WARNING, logger="adaptlab.strategies.prompt.many_shot"):
        adapted = ManyShotConfig().fit(task, TRAIN, [], FitContext.of(lm))
    assert adapted.demos == [] and adapted.fit_info["k_used"] == 0 and "raise context_share" in caplog.text
    assert adapted.cost()["labels"] == {"train": 0, "dev": 0}


def test_largest_fitting_is_the_boundary():
    for n in range(8):
        for limit in range(-1, n + 2):
            calls = []

            def fits(k, limit=limit, calls=calls):
                calls.append(k)
                return k <= limit

            k = largest_fitting(fits, n)
            assert k == max(0, min(limit, n)), (n, limit)
            assert len(calls) <= 2 + max(n, 1).bit_length()


def test_chat_format_counts_through_the_chat_template():
    lm = scripted(80, tokenizer=chatml_tokenizer())
    adapted = ManyShotConfig(format="chat").fit(sentiment_task(), TRAIN, [], FitContext.of(lm))
    k = adapted.fit_info["k_used"]
    full = balanced_order(sentiment_task(), TRAIN, 0)
    assert 0 < k < len(TRAIN)
    assert prefix_tokens(adapted, full[:k], lm) <= 40 < prefix_tokens(adapted, full[:k + 1], lm)
    assert adapted.context("", adapted.demos, lm.tokenizer).startswith("<|im_start|>system")


# -- selection, seeds, cap -------------------------------------------------------------------------------
def test_balanced_alternates_and_uses_every_class():
    task = sentiment_task()
    adapted = ManyShotConfig().fit(task, TRAIN, [], FitContext.of(scripted()))
    outputs = [d.output for d in adapted.demos]
    assert outputs == ["0", "1"] * 6  # the whole pool fits: classes take turns in label order
    small = ManyShotConfig().fit(task, TRAIN, [], FitContext.of(scripted(60)))
    assert Counter(d.output for d in small.demos) == {"0": 3, "1": 3}
    # an imbalanced pool: classes alternate while both last, then the larger class continues
    skewed = make_examples([r for r in TRAIN_ROWS if r[1] == "1"] + [("awful", "0"), ("dull", "0")])
    out = [d.output for d in ManyShotConfig().fit(task, skewed, [], FitContext.of(scripted())).demos]
    assert out == ["0", "1", "0", "1", "1", "1", "1", "1"]


def test_random_selection_is_a_seeded_shuffle():
    task = sentiment_task()
    adapted = ManyShotConfig(selection="random").fit(task, TRAIN, [], FitContext.of(scripted(70), seed=5))
    k = adapted.fit_info["k_used"]
    assert adapted.demos == select_random(demo_pool(task, TRAIN), len(TRAIN), seed=5)[:k]


@pytest.mark.parametrize("options", [{}, {"selection": "random"}, {"order": "random"}, {"order": "by_label"}])
def test_seeds_change_the_demonstrations_deterministically(options):
    task = sentiment_task()

    def demos(seed):
        cfg = ManyShotConfig(**options)
        return [d.id for d in cfg.fit(task, TRAIN, [], FitContext.of(scripted(70), seed=seed)).demos]

    assert demos(1) == demos(1)
    assert demos(1) != demos(2)
    if options.get("order") == "by_label":
        outputs = [d.output for d in ManyShotConfig(**options).fit(task, TRAIN, [], FitContext.of(scripted())).demos]
        assert outputs == sorted(outputs)


def test_max_k_caps():
    task = sentiment_task()
    capped = ManyShotConfig(max_k=4).fit(task, TRAIN, [], FitContext.of(scripted()))
    assert len(capped.demos) == capped.fit_info["k_used"] == 4 and capped.demos == balanced_order(task, TRAIN, 0)[:4]
    assert capped.cost()["labels"]["train"] == len(TRAIN) and capped.fit_info["pool"] == len(TRAIN)
    shown = ManyShotConfig(max_k=4, selection="random").fit(task, TRAIN, [], FitContext.of(scripted()))
    assert shown.cost()["labels"]["train"] == 4  # random selection reads only the labels it shows
    # the budget still rules below the cap, and a cap above the pool uses the pool
    assert len(ManyShotConfig(max_k=100).fit(task, TRAIN, [], FitContext.of(scripted(60))).demos) == 6
    assert len(ManyShotConfig(max_k=100).fit(task, TRAIN, [], FitContext.of(scripted())).demos) == len(TRAIN)


def test_calibrates_like_few_shot_and_predicts():
    task = sentiment_task()
    lm = scripted(bias={"negative": 0.6, "positive": 0.4})
    adapted = ManyShotConfig(calibrate=True).fit(task, TRAIN, [], FitContext.of(lm))
    assert adapted.calibration.mode == "static" and len(adapted.calibration.p_cf) == 2
    few = FewShotConfig(k=len(TRAIN), selection="balanced", calibrate=True).fit(task, TRAIN, [], FitContext.of(lm))
    assert few.demos == adapted.demos and few.calibration.p_cf == adapted.calibration.p_cf
    preds = adapted.predict(TEST)
    assert [p.pred for p in preds] == [ex.fields["label"] for ex in TEST]
    assert adapted.cost()["query"]["prefix_shared"] is True


def test_options_are_validated():
    parse = get_strategy("many_shot").parse
    with pytest.raises(ConfigError) as e:
        parse({"context_share": 1.5})
    assert e.value.field == "context_share"
    with pytest.raises(ConfigError):
        parse({"context_share": 0.0})
    with pytest.raises(ConfigError, match="one of"):
        parse({"selection": "knn"})
    with pytest.raises(ConfigError, match="one of"):
        parse({"order": "similar_last"})
    with pytest.raises(ConfigError):
        parse({"max_k": 0})
    with pytest.raises(ConfigError, match="did you mean 'max_k'"):
        parse({"maxk": 4})
    assert parse({"context_share": 1, "calibrate": True}).context_share == 1.0
    assert {"context_share", "selection", "max_k", "order", "answer_prefix"} <= set(ManyShotConfig.describe())


def test_generation_task_needs_random_selection():
    task = sentiment_task(type="generation", labels={}, label_field=None, target="{{ label }}",
                          metric="exact_match")
    lm = ScriptedLM({}, generations={"good": " 1", "bad": " 0"})
    with pytest.raises(ConfigError, match="classification") as e:
        ManyShotConfig().fit(task, TRAIN, [], FitContext.of(lm))
    assert "random" in e.value.hint
    adapted = ManyShotConfig(selection="random").fit(task, TRAIN, [], FitContext.of(lm))
    assert len(adapted.demos) == len(TRAIN) and adapted.predict(TEST[:2])[0].pred == "1"


# -- the grid and label accounting ----------------------------------------------------------------------
GRID = """\
name: many
task: builtin:demo
model: tiny-random-llama
train_sizes: [16, 64, all]
seeds: [0, 1]
strategies:
  - zero_shot
  - name: few_shot
    options: {k: 4}
  - name: many_shot
    options: {context_share: [0.25, 0.5]}
"""


def test_grid_gives_a_cell_per_training_size(tmp_path: Path):
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.grid import expand_cells

    path = tmp_path / "exp.yaml"
    path.write_text(GRID, encoding="utf-8")
    cells = [c for c in expand_cells(load_experiment(path), 100) if c.strategy == "many_shot"]
    assert len(cells) == 2 * 3 * 2 and {c.family for c in cells} == {"prompt"}
    assert Counter(c.n_train for c in cells) == {16: 4, 64: 4, 100: 4}
    assert {c.options["context_share"] for c in cells} == {0.25, 0.5}
    assert len({c.key for c in cells}) == len(cells)
    assert get_strategy("many_shot").label_use(ManyShotConfig()).mode == "train_sizes"


@pytest.mark.parametrize("n_train", [4, 8, 12])
def test_labels_counted_are_the_demonstrations_used(tmp_path: Path, n_train):
    task, lm = sentiment_task(), scripted(70)
    adapted = ManyShotConfig(selection="random").fit(task, TRAIN[:n_train], [], FitContext.of(lm))
    used = len(adapted.demos)
    assert adapted.cost()["labels"] == {"train": used, "dev": 0} and adapted.fit_info["k_used"] == used
    assert adapted.fit_info["pool"] == n_train
    before = [(p.pred, p.scores) for p in adapted.predict(TEST)]
    loaded = load_adapted(adapted.save(tmp_path), lambda name: lm)
    assert loaded.cost()["labels"] == {"train": used, "dev": 0} and loaded.strategy == "many_shot"
    assert [(p.pred, p.scores) for p in loaded.predict(TEST)] == before


def test_every_prompt_artifact_counts_its_labels():
    task, lm, emb = sentiment_task(), scripted(), KeywordEmbedder(["good", "bad", "great", "awful"])
    ctx = FitContext.of(lm, embedders={"minilm-l6": emb})
    assert ZeroShotConfig().fit(task, TRAIN, [], ctx).cost()["labels"] == {"train": 0, "dev": 0}
    assert FewShotConfig(k=4).fit(task, TRAIN, [], ctx).cost()["labels"] == {"train": 4, "dev": 0}
    knn = FewShotConfig(k=2, selection="knn", pool_size=10).fit(task, TRAIN, [], ctx)
    assert knn.cost()["labels"] == {"train": 10, "dev": 0}
    dev = make_examples(TEST_ROWS, "dev")
    search = PromptSearchConfig(k=2, n_demo_sets=2, use_library=False, max_dev=5).fit(task, TRAIN, dev, ctx)
    assert search.cost()["labels"] == {"train": len(TRAIN), "dev": 5}
    bare = PromptSearchConfig(k=0, use_library=False, max_dev=5).fit(task, TRAIN, dev, ctx)
    assert bare.cost()["labels"] == {"train": 0, "dev": 5}


# -- the real model --------------------------------------------------------------------------------------
@pytest.mark.integration
def test_real_model_many_shot_on_the_demo_task(default_loaded):
    """128 labels of the demo task (7 intents): many-shot fits more than 8 demonstrations and scores at least as
    well as 8-shot balanced on 60 test examples (measured: 128 demonstrations in a 3,072-token prefix, 19/60
    against 17/60); the shared prefix is computed once per scoring call."""
    from adaptlab.data import builtin_task
    from adaptlab.data.splits import load_splits, nested_subsets
    from adaptlab.metrics import compute

    task = builtin_task("demo")
    splits = load_splits(task, seed=0)
    train = nested_subsets(splits.train, [128], seed=0, label_of=task.label_of)[128]
    test = splits.test[:60]
    refs = [task.label_of(ex) for ex in test]
    ctx = FitContext.of(default_loaded, seed=0)
    lm = ctx.lm()

    def accuracy(adapted):
        before = lm.usage.computed_tokens
        preds = adapted.predict(test)
        return compute("accuracy", [p.pred for p in preds], refs), lm.usage.computed_tokens - before

    few = FewShotConfig(k=8, selection="balanced").fit(task, train, [], ctx)
    many = ManyShotConfig().fit(task, train, [], ctx)
    info = many.fit_info
    assert info["k_used"] == len(many.demos) > 8 and info["pool"] == len(train)
    assert info["prefix_tokens"] <= info["budget_tokens"] == lm.max_length // 2
    # balanced selection reads every label of the pool to alternate the classes, even when fewer fit
    assert many.cost()["labels"] == {"train": info["pool"], "dev": 0} and info["labels_read"] == info["pool"]
    few_acc, _ = accuracy(few)
    many_acc, computed = accuracy(many)
    assert many_acc >= few_acc
    # the demonstrations are encoded once for the 60 queries, not once per query
    assert computed < info["prefix_tokens"] + 60 * 64
