"""Strategy configs, registry, fitting, prompt search, and artifact round trips."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from adaptlab.data.example import RAW_INPUT_FIELD, Example
from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.strategies import (ARTIFACT_FILE, CalibrateConfig, FewShotConfig, FitContext, PromptSearchConfig,
                                 ZeroShotConfig, get_strategy, load_adapted, strategy_names)
from adaptlab.strategies.prompt.artifact import PromptAdapted
from adaptlab.strategies.prompt.prompt_search import candidate_templates
from fakes import (SENTIMENT_KEYWORDS, TEST_ROWS, TRAIN_ROWS, KeywordEmbedder, ScriptedLM,
                   chatml_tokenizer, make_examples, sentiment_task)

TRAIN = make_examples(TRAIN_ROWS)
TEST = make_examples(TEST_ROWS, "test")
VOCAB = [w for ws in SENTIMENT_KEYWORDS.values() for w in ws]


def preds_of(adapted, examples=TEST):
    return [(p.id, p.pred, p.scores) for p in adapted.predict(examples)]


def ctx_of(lm, emb=None, **kw):
    return FitContext.of(lm, embedders={"minilm-l6": emb} if emb is not None else None, **kw)


# -- configs and registry --------------------------------------------------------------------------
def test_registry_and_did_you_mean():
    assert {"zero_shot", "few_shot", "calibrate", "prompt_search"} <= set(strategy_names())
    assert {"zero_shot", "few_shot", "calibrate", "prompt_search"} <= set(strategy_names("prompt"))
    assert get_strategy("few_shot").config is FewShotConfig
    with pytest.raises(ConfigError, match="did you mean 'few_shot'"):
        get_strategy("fewshot")


def test_config_parsing_errors():
    with pytest.raises(ConfigError) as e:
        FewShotConfig.parse({"selction": "knn"}, file="exp.yaml", line=7)
    assert e.value.field == "selction" and "selection" in e.value.hint
    assert e.value.one_line().startswith("exp.yaml:7")
    with pytest.raises(ConfigError, match="integer") as e:
        FewShotConfig.parse({"k": "8"})
    assert e.value.field == "k"
    with pytest.raises(ConfigError, match="one of"):
        ZeroShotConfig.parse({"score": "max"})
    with pytest.raises(ConfigError, match="knn"):
        FewShotConfig(order="similar_last")
    with pytest.raises(ConfigError, match="list"):
        ZeroShotConfig(content_free="N/A")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one of"):
        PromptSearchConfig(selection="knn")
    cfg = get_strategy("few_shot").parse({"k": 4, "selection": "knn"})
    assert cfg.resolved_order == "similar_last" and cfg.to_dict()["k"] == 4
    assert "selection" in FewShotConfig.describe()


# -- fitting and prediction ------------------------------------------------------------------------
def test_zero_shot_scores_all_queries_in_one_call():
    lm = ScriptedLM(SENTIMENT_KEYWORDS)
    adapted = get_strategy("zero_shot").config().fit(sentiment_task(), TRAIN, [], ctx_of(lm))
    assert adapted.lm is lm
    lm.calls.clear()
    preds = adapted.predict(TEST)
    assert lm.calls == [len(TEST)]
    assert [p.pred for p in preds] == [ex.fields["label"] for ex in TEST]
    assert all(abs(sum(p.scores.values()) - 1) < 1e-9 for p in preds)
    cost = adapted.cost()
    assert cost["query"]["prefix_shared"] is True and cost["query"]["demonstrations"] == 0
    assert cost["train"]["trainable_params"] == 0


def test_few_shot_balanced_random_and_determinism():
    task, lm = sentiment_task(), ScriptedLM(SENTIMENT_KEYWORDS)
    bal = FewShotConfig(k=6, selection="balanced").fit(task, TRAIN, [], ctx_of(lm))
    assert Counter(d.output for d in bal.demos) == {"0": 3, "1": 3}
    assert "Answer: negative" in bal.context("x", bal.demos)
    r1 = FewShotConfig(k=4).fit(task, TRAIN, [], ctx_of(lm, seed=1))
    r2 = FewShotConfig(k=4).fit(task, TRAIN, [], ctx_of(lm, seed=1))
    r3 = FewShotConfig(k=4).fit(task, TRAIN, [], ctx_of(lm, seed=2))
    assert r1.demos == r2.demos and r1.demos != r3.demos
    assert r1.fit_info["prefix_tokens"] == lm.count_tokens(r1.context("", r1.demos))


def test_chat_format_renders_through_the_lm_tokenizer():
    lm = ScriptedLM(SENTIMENT_KEYWORDS, tokenizer=chatml_tokenizer())
    adapted = ZeroShotConfig(format="chat").fit(sentiment_task(), TRAIN, [], ctx_of(lm))
    preds = adapted.predict(TEST)
    assert [p.pred for p in preds] == [ex.fields["label"] for ex in TEST]
    ctx = adapted.context("so bad", [], lm.tokenizer)
    assert preds[1].prompt_tokens == lm.count_tokens(ctx)
    assert ctx.startswith("<|im_start|>system\nClassify the sentiment.") and ctx.endswith("Answer:")
    with pytest.raises(ConfigError, match="tokenizer"):
        adapted.bound(ScriptedLM(SENTIMENT_KEYWORDS)).predict(TEST)
    assert adapted.lm is lm  # bound() binds a copy


def test_knn_prompts_differ_per_query():
    task, lm = sentiment_task(), ScriptedLM(SENTIMENT_KEYWORDS)
    emb = KeywordEmbedder(VOCAB)
    adapted = FewShotConfig(k=2, selection="knn").fit(task, TRAIN, [], ctx_of(lm, emb))
    demos = adapted.demos_for(["great", "dull"])
    # similar_last: the most similar demonstration sits right before the query
    assert "great" in demos[0][-1].input and "dull" in demos[1][-1].input
    preds = adapted.predict(TEST)
    assert adapted.cost()["query"]["prefix_shared"] is False
    assert adapted.cost()["query"]["prompt_tokens"] == np.mean([p.prompt_tokens for p in preds])
    assert adapted.fit_info["knn_pool"] == len(TRAIN)


def test_generation_task_greedy_and_extraction():
    task = sentiment_task(type="generation", labels={}, label_field=None, target="{{ label }}",
                          metric="exact_match")
    lm = ScriptedLM({}, generations={"good": " Answer: yes\nignored", "bad": '"no"'})
    adapted = FewShotConfig(k=2).fit(task, TRAIN, [], ctx_of(lm))
    preds = adapted.predict(TEST[:2])
    assert [p.pred for p in preds] == ["yes", "no"] and preds[0].raw == " Answer: yes"
    assert adapted.demos[0].output in {"0", "1"}  # demonstrations answer with their targets
    with pytest.raises(ConfigError, match="classification"):
        FewShotConfig(k=2, selection="balanced").fit(task, TRAIN, [], ctx_of(lm))


# -- prompt search -----------------------------------------------------------------------------------
def test_prompt_search_picks_best_and_records_spread():
    task = sentiment_task()
    lm = ScriptedLM(SENTIMENT_KEYWORDS, good_prefix="Sentiment:")
    cfg = PromptSearchConfig(k=2, n_demo_sets=2, use_library=False,
                             answer_prefixes=["Label:", "Sentiment:"], max_dev=6)
    dev = make_examples(TEST_ROWS, "dev")
    adapted = cfg.fit(task, TRAIN, dev, ctx_of(lm))
    search = adapted.fit_info["search"]
    assert search["n_candidates"] == 6 and len(search["candidates"]) == 6
    assert search["dev_n"] == 6 and search["dev_queries_scored"] == 36
    scores = [c["dev_metric"] for c in search["candidates"]]
    best = search["candidates"][search["best_index"]]
    assert best["dev_metric"] == max(scores) == 1.0 and best["answer_prefix"] == "Sentiment:"
    assert adapted.fmt.answer_prefix == "Sentiment:"
    assert adapted.demos == [] or [d.id for d in adapted.demos] == best["demo_ids"]
    spread = search["spread"]
    assert spread["min"] == min(scores) < spread["max"] == max(scores)
    assert spread["mean"] == pytest.approx(np.mean(scores))
    assert spread["std"] == pytest.approx(np.std(scores))
    assert search["seconds"] >= 0 and adapted.fit_info["seconds"] >= search["seconds"]


def test_prompt_search_library_and_cap():
    task = sentiment_task()
    instr, answers, inputs = candidate_templates(PromptSearchConfig(), task)
    assert instr[0] == task.instruction
    assert any("negative, positive" in i for i in instr)
    assert "Answer:" in answers and "Label:" in answers and "" in inputs
    assert not any("{" in a for a in answers)  # generic label field: {label_name} phrasings skipped
    named = sentiment_task(label_field="sentiment")
    assert "Sentiment:" in candidate_templates(PromptSearchConfig(), named)[1]
    lm = ScriptedLM(SENTIMENT_KEYWORDS)
    capped = PromptSearchConfig(k=0, max_candidates=5, max_dev=4).fit(task, TRAIN, TEST, ctx_of(lm))
    search = capped.fit_info["search"]
    assert search["n_candidates"] == 5 and search["n_possible"] > 5
    first = search["candidates"][0]
    assert (first["instruction"], first["answer_prefix"], first["input_prefix"]) == \
        (task.instruction, "Answer:", "")


# -- artifacts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    ZeroShotConfig(calibrate=True),
    FewShotConfig(k=4, selection="balanced", order="random", input_prefix="Review: "),
    CalibrateConfig(k=3, selection="knn"),
], ids=["zero_cal", "few_balanced", "knn_cal"])
def test_save_load_identical_predictions(tmp_path, cfg):
    task = sentiment_task()
    lm = ScriptedLM(SENTIMENT_KEYWORDS, bias={"negative": 0.6, "positive": 0.4})
    emb = KeywordEmbedder(VOCAB)
    adapted = cfg.fit(task, TRAIN, [], ctx_of(lm, emb))
    before = preds_of(adapted)
    adapted.save(tmp_path)
    data = json.loads((tmp_path / ARTIFACT_FILE).read_text())
    assert data["kind"] == "prompt" and data["model"] == "scripted"
    assert data["task"]["labels"] == [{"key": "0", "verbalizer": "negative"},
                                      {"key": "1", "verbalizer": "positive"}]
    assert data["calibration"]["label_order"] == ["0", "1"] and "adaptlab_version" in data
    bound = []

    def binder(name):
        bound.append(name)
        return lm

    loaded = load_adapted(tmp_path, binder)
    assert isinstance(loaded, PromptAdapted)
    assert bound == []  # the model is built on first prediction
    if loaded.knn is not None:
        assert loaded._index is not None  # embeddings cached next to adapted.json
        loaded.set_embedder(emb)
    assert preds_of(loaded) == before
    assert bound == ["scripted"] and loaded.lm is lm
    # raw input text bypasses the template
    raw = Example("t", {RAW_INPUT_FIELD: "great fun"}, "<text>", 1)
    assert loaded.predict([raw])[0].pred == "1"


def test_knn_embeddings_recomputed_when_missing(tmp_path):
    task, lm, emb = sentiment_task(), ScriptedLM(SENTIMENT_KEYWORDS), KeywordEmbedder(VOCAB)
    adapted = FewShotConfig(k=2, selection="knn").fit(task, TRAIN, [], ctx_of(lm, emb))
    before = preds_of(adapted)
    adapted.save(tmp_path)
    (tmp_path / "knn_embeddings.npy").unlink()
    loaded = load_adapted(tmp_path, lambda name: lm)
    assert loaded._index is None
    loaded.set_embedder(emb)
    assert preds_of(loaded) == before


def test_load_adapted_errors(tmp_path):
    with pytest.raises(AdaptlabError, match="no adapted.json"):
        load_adapted(tmp_path)
    (tmp_path / ARTIFACT_FILE).write_text('{"kind": "prompts"}')
    with pytest.raises(AdaptlabError, match="did you mean 'prompt'"):
        load_adapted(tmp_path)
    task, lm, emb = sentiment_task(), ScriptedLM(SENTIMENT_KEYWORDS), KeywordEmbedder(VOCAB)
    FewShotConfig(k=2, selection="knn").fit(task, TRAIN, [], ctx_of(lm, emb)).save(tmp_path)
    data = json.loads((tmp_path / ARTIFACT_FILE).read_text())
    data["knn"]["embeddings_file"] = "../../etc/x.npy"
    (tmp_path / ARTIFACT_FILE).write_text(json.dumps(data))
    # the shared artifact_path check words it "points outside the artifact folder" (was "must be a file
    # inside the artifact folder"); the path is refused all the same, naming the field
    with pytest.raises(AdaptlabError, match="outside the artifact folder") as e:
        load_adapted(tmp_path)
    assert e.value.field == "knn.embeddings_file"


def test_loaded_knn_prompt_loads_its_embedder_by_name(tmp_path, monkeypatch):
    """Without set_embedder, a loaded kNN prompt loads the embedder its artifact names (what `adaptlab predict`
    does); the models layer's load_embedder is replaced by the keyword embedder here."""
    from adaptlab.models import embeddings

    task, lm, emb = sentiment_task(), ScriptedLM(SENTIMENT_KEYWORDS), KeywordEmbedder(VOCAB)
    adapted = FewShotConfig(k=2, selection="knn").fit(task, TRAIN, [], ctx_of(lm, emb))
    before = preds_of(adapted)
    adapted.save(tmp_path)
    names = []
    monkeypatch.setattr(embeddings, "load_embedder", lambda name: names.append(name) or emb)
    loaded = load_adapted(tmp_path, lambda name: lm)
    assert preds_of(loaded) == before
    assert names == ["minilm-l6"]
