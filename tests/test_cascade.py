"""The cascade strategy: threshold choice on dev, deferral, label and cost accounting, save/load, errors.

Most tests use scripted LMs (`fakes.ScriptedLM`) on both sides, so every confidence and every deferral is
computable by hand: the small model is a test-only "fine-tune" (`ScriptedTuneConfig`: zero-shot scoring through
its role's scripted LM) that knows only the words ``good`` and ``bad`` and leans to ``negative`` (bias 1.1 : 1);
the large model knows all the sentiment keywords and is right on every dev example. The save/load test runs the
real path on the tiny random Llama (LoRA small, zero-shot large).
"""

from __future__ import annotations

import json

import pytest

from adaptlab.errors import ConfigError
from adaptlab.evaluate import EvalSettings
from adaptlab.experiment.cells import CellInputs, CellWork, fit_and_evaluate, labels_used
from adaptlab.lm.base import Usage
from adaptlab.models.prices import TokenPrice
from adaptlab.models.spec import ModelSpec
from adaptlab.strategies import (ARTIFACT_FILE, CascadeConfig, FitContext, LabelUse, ModelPool, ZeroShotConfig,
                                 get_strategy, load_adapted, strategy)
from adaptlab.strategies.cascade import ALWAYS_DEFER, Cascaded
from adaptlab.strategies.prompt.artifact import PROMPT_ARTIFACT
from fakes import SENTIMENT_KEYWORDS, TEST_ROWS, TRAIN_ROWS, ScriptedLM, make_examples, sentiment_task


@strategy("cascade_test_tune", family="finetune", artifact=PROMPT_ARTIFACT)
class ScriptedTuneConfig(ZeroShotConfig):
    """Test stand-in for a fine-tune: zero-shot scoring through its role's scripted LM; reads every training
    label, as a fine-tune does."""

    def label_use(self) -> LabelUse:
        return LabelUse("train_sizes")

    def learns_labels(self) -> bool:
        return True

    def fit(self, task, train, dev, ctx):
        adapted = super().fit(task, train, dev, ctx)
        adapted.fit_info["labels_read"] = len(train)
        return adapted


class PricedLM(ScriptedLM):
    """A scripted API model: each request reports 10 input tokens and 1 output token, at a known price."""

    token_price = TokenPrice(input_per_mtok=1.0, output_per_mtok=2.0)
    price_source = "test"

    def loglikelihood(self, requests, *, progress=False):
        out = super().loglikelihood(requests, progress=progress)
        self.usage.add(Usage(reported_input_tokens=10 * len(requests), reported_output_tokens=len(requests)))
        return out


TASK = sentiment_task()
TRAIN = make_examples(TRAIN_ROWS)
TEST = make_examples(TEST_ROWS, "test")
DEV_ROWS = [("good", "1"), ("bad bad", "0"), ("great fun", "1"), ("dull", "0"), ("so bad", "0"),
            ("good good", "1"), ("good yet dull and awful", "0"), ("fun fun", "1")]
DEV = make_examples(DEV_ROWS, "dev")
# the small model's p(label) = bias * (1 + 2 * keyword hits) / Z: its confidence and whether it is right
CONF = [3 / 4.1, 5.5 / 6.5, 1.1 / 2.1, 1.1 / 2.1, 3.3 / 4.3, 5 / 6.1, 3 / 4.1, 1.1 / 2.1]
SMALL_RIGHT = [True, True, False, True, True, True, False, False]
# the curve by hand (large always right): (threshold, deferred, dev accuracy); thresholds deferring nothing
# more than a lower one are dropped
CURVE = [(0.0, 0 / 8, 5 / 8), (3 / 4.1, 3 / 8, 7 / 8), (3.3 / 4.3, 5 / 8, 1.0), (5 / 6.1, 6 / 8, 1.0),
         (5.5 / 6.5, 7 / 8, 1.0), (ALWAYS_DEFER, 1.0, 1.0)]
SMALL = {"name": "cascade_test_tune"}
LARGE = {"name": "zero_shot", "model": "large"}


def scripted_pool(large_cls=ScriptedLM) -> tuple[ModelPool, ScriptedLM]:
    small = ScriptedLM({"positive": ["good"], "negative": ["bad"]}, bias={"negative": 1.1, "positive": 1.0},
                       name="small-lm")
    large = large_cls(SENTIMENT_KEYWORDS, name="large-lm")
    return ModelPool(lms={"default": small, "large": large}), large


def fit_scripted(pool: ModelPool, **options) -> Cascaded:
    cfg = CascadeConfig.parse({"small": SMALL, "large": LARGE, "dev_limit": 8, **options})
    return cfg.fit(TASK, TRAIN, DEV, FitContext(models=pool))


@pytest.mark.parametrize("target, threshold, chosen_by", [
    (0.8, 3 / 4.1, "target"),       # the fewest deferrals reaching 0.8: 3 deferred, 7/8 right
    (None, 3.3 / 4.3, "best"),      # the best (1.0) with the fewest deferrals: 5 deferred, not 6, 7 or 8
    (0.6, 0.0, "target"),           # the small model alone (5/8) reaches 0.6: never defer
    (1.01, 3.3 / 4.3, "best"),      # unreachable: the best point
])
def test_threshold_is_the_fewest_deferrals_meeting_the_target(target, threshold, chosen_by):
    adapted = fit_scripted(scripted_pool()[0], accuracy_target=target)
    search = adapted.cost()["search"]
    assert adapted.threshold == pytest.approx(threshold) and search["threshold"] == adapted.threshold
    assert search["chosen_by"] == chosen_by and search["accuracy_target"] == target
    got = [(p["threshold"], p["deferred"], p["accuracy"]) for p in search["curve"]]
    assert got == [pytest.approx(point) for point in CURVE]
    assert search["small_dev_accuracy"] == 5 / 8 and search["large_dev_accuracy"] == 1.0
    assert search["dev_n"] == 8 and search["kind"] == "cascade" and search["metric"] == "accuracy"
    for p in search["curve"]:  # cost grows with deferral: small seconds always, large seconds/tokens per deferral
        assert p["seconds_per_query"] == pytest.approx(search["small_seconds_per_query"]
                                                       + p["deferred"] * search["large_seconds_per_query"])
        assert p["tokens_per_query"] == pytest.approx(p["deferred"] * search["large_tokens_per_query"])
    assert search["large_tokens_per_query"] > 0


def test_predict_defers_exactly_the_unsure_queries_and_only_they_reach_the_large_model():
    pool, large = scripted_pool()
    adapted = fit_scripted(pool, accuracy_target=0.8)  # threshold 3 / 4.1
    assert adapted.lm is large
    large.calls.clear()
    requests = large.usage.requests
    preds = adapted.predict(DEV)
    deferred = [p.extra["deferred"] for p in preds]
    assert deferred == [c < 3 / 4.1 - 1e-9 for c in CONF] == [False, False, True, True, False, False, False, True]
    assert [p.extra["confidence"] for p in preds] == pytest.approx(CONF)
    assert large.calls == [3] and large.usage.requests - requests == 3  # one batched call, deferred only
    gold = [label for _, label in DEV_ROWS]
    assert [p.pred == g for p, g in zip(preds, gold)] == [r or d for r, d in zip(SMALL_RIGHT, deferred)]
    assert all(abs(sum(p.scores.values()) - 1) < 1e-9 for p in preds)
    query = adapted.cost()["query"]
    assert query["deferred_fraction"] == 3 / 8 and query["queries"] == 8 and query["measured_on"] == "predict"
    assert query["hardware_seconds"] > 0 and query["threshold"] == adapted.threshold
    assert adapted.cost()["query"]["queries"] == 8  # a second read without a predict reports the same
    adapted.predict(DEV[:2])  # neither is deferred
    assert large.calls == [3] and adapted.cost()["query"]["deferred_fraction"] == 0.0


def test_dev_labels_are_counted_and_reach_the_cell(tmp_path):
    pool = scripted_pool(PricedLM)[0]
    options = {"small": SMALL, "large": LARGE, "dev_limit": 6, "accuracy_target": 0.8}
    work = CellWork("cascade", options, TRAIN, seed=0, out=tmp_path)
    settings = EvalSettings(latency_sample=3, throughput_batch_sizes=())
    result = fit_and_evaluate(work, CellInputs(TASK, TRAIN, DEV, TEST), pool, settings)
    assert result.cost["labels"] == {"train": len(TRAIN), "dev": 6}
    assert labels_used(result.cost["labels"], len(TRAIN)) == len(TRAIN) + 6
    assert result.search["dev_n"] == 6 and result.search["kind"] == "cascade"
    train = result.cost["train"]
    # the priced large model scored the 6 dev examples (zero-shot fits without a request): 10 tokens each
    assert train["api_input_tokens"] == 60 and train["api_output_tokens"] == 6
    assert train["token_price"] == {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "source": "test"}
    assert train["seconds"] >= train["parts"]["dev_seconds"] > 0
    query = result.cost["query"]
    assert query["queries"] == len(TEST)  # the main predict, not the latency timings after it
    deferred = query["deferred_fraction"]
    assert 0 < deferred < 1 and query["hardware_seconds"] > 0
    assert query["api_input_tokens"] == pytest.approx(10 * deferred)  # only deferred queries reach the API
    saved = json.loads((tmp_path / ARTIFACT_FILE).read_text())
    assert saved["kind"] == "cascade" and saved["train"]["labels"] == {"train": len(TRAIN), "dev": 6}


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_save_and_load_predict_the_same_on_the_tiny_model(tiny_loaded, tmp_path, one_thread):
    from adaptlab.predict import predict_texts

    pool = ModelPool({r: ModelSpec(name=tiny_loaded.name) for r in ("default", "large")},
                     loaded={"default": tiny_loaded, "large": tiny_loaded})
    small = {"name": "lora", "options": {"max_steps": 2, "min_steps": None, "batch_size": 4, "eval_limit": 4,
                                         "progress": False, "save_every": 0}}
    cfg = CascadeConfig.parse({"small": small, "large": {"name": "zero_shot", "model": "large"}, "dev_limit": 8})
    adapted = cfg.fit(TASK, TRAIN, DEV, FitContext(models=pool, work_dir=tmp_path / "work"))
    cost = adapted.cost()
    assert cost["labels"] == {"train": len(TRAIN), "dev": 8}
    assert cost["train"]["trainable_params"] > 0 and cost["train"]["flops"] > 0
    confs = sorted(p.extra["confidence"] for p in adapted.predict(DEV))
    adapted.threshold = confs[len(confs) // 2]  # both paths: some deferred, some not
    before = adapted.predict(DEV)
    assert 0 < sum(p.extra["deferred"] for p in before) < len(DEV)
    out = adapted.save(tmp_path / "art")
    assert json.loads((out / "small" / ARTIFACT_FILE).read_text())["kind"] == "finetuned"
    assert json.loads((out / "large" / ARTIFACT_FILE).read_text())["kind"] == "prompt"
    loaded = load_adapted(out)  # the large prompt's model through the default (local) binder
    assert isinstance(loaded, Cascaded) and loaded.threshold == adapted.threshold
    after = loaded.predict(DEV)
    assert [(p.pred, p.extra["deferred"]) for p in after] == [(p.pred, p.extra["deferred"]) for p in before]
    for a, b in zip(after, before):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    assert loaded.cost()["labels"] == cost["labels"] and loaded.cost()["search"] == cost["search"]
    texts = predict_texts(out, texts=["great fun"])  # what `adaptlab predict` runs
    assert len(texts) == 1 and texts[0].pred in TASK.label_keys and "deferred" in texts[0].extra


def test_options_plumbing():
    info = get_strategy("cascade")
    assert info.family == "finetune" and info.arm == "cascade"
    assert info.experiment_defaults == ("epochs", "accuracy_target")
    large = {"name": "few_shot", "model": "large", "options": {"k": 4}}
    cfg = CascadeConfig.parse({"small": "lora", "large": large, "epochs": 2, "accuracy_target": None})
    assert cfg.small_config().epochs == 2  # the experiment's epochs reach the small model
    pinned = CascadeConfig.parse({"small": {"name": "lora", "options": {"epochs": 5}}, "large": large, "epochs": 2})
    assert pinned.small_config().epochs == 5  # its own option wins
    assert cfg.label_use() == LabelUse("train_sizes", 4) and cfg.roles() == {"large"} and cfg.learns_labels()
    assert [ex.id for ex in cfg.large_gold(TRAIN)] == [ex.id for ex in TRAIN[:4]]


@pytest.mark.parametrize("options, field, words", [
    ({"small": "few_shot", "large": LARGE}, "small.name", "small must be a fine-tuning strategy"),
    ({"small": "lora", "large": "lora"}, "large.name", "large must be a prompting strategy"),
    ({"small": "lora", "large": LARGE, "dev_limit": 0}, "dev_limit", "must be >= 1"),
])
def test_bad_options_are_one_line_errors(options, field, words):
    with pytest.raises(ConfigError) as e:
        CascadeConfig.parse(options)
    assert e.value.field == field and words in e.value.message and "\n" not in e.value.one_line()


def test_generation_task_and_empty_dev_are_refused():
    generation = sentiment_task(type="generation", labels={}, label_field=None, target="{{ label }}",
                                metric="exact_match")
    cfg = CascadeConfig.parse({"small": SMALL, "large": LARGE})
    pool = scripted_pool()[0]
    with pytest.raises(ConfigError, match="classification tasks only") as e:
        cfg.fit(generation, TRAIN, DEV, FitContext(models=pool))
    assert e.value.field == "strategy" and "\n" not in e.value.one_line()
    with pytest.raises(ConfigError, match="non-empty dev") as e:
        cfg.fit(TASK, TRAIN, [], FitContext(models=pool))
    assert e.value.field == "dev_limit"
