"""Contextual calibration: hand-computed corrections on a scripted LM with a known label bias."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptlab.lm.base import ContinuationScores
from adaptlab.strategies import CalibrateConfig, FewShotConfig, FitContext, ZeroShotConfig
from adaptlab.strategies.prompt.calibration import (calibrate, content_free_prior, label_logits,
                                                    label_probs, softmax)
from fakes import (SENTIMENT_KEYWORDS, TEST_ROWS, TRAIN_ROWS, KeywordEmbedder, ScriptedLM,
                   make_examples, sentiment_task)

BIAS = {"negative": 0.8, "positive": 0.2}


def test_label_probs_sum_and_mean():
    s = ContinuationScores(logprobs=(math.log(0.2), math.log(0.3) * 2), token_counts=(1, 2))
    np.testing.assert_allclose(label_probs(s, "sum"), [0.2 / (0.2 + 0.09), 0.09 / (0.2 + 0.09)])
    np.testing.assert_allclose(label_logits(s, "mean"), [math.log(0.2), math.log(0.3)])
    np.testing.assert_allclose(label_probs(s, "mean"), [0.4, 0.6])


def test_calibrate_hand_computed():
    p_cf = np.array([0.8, 0.2])
    np.testing.assert_allclose(calibrate(np.array([4 / 7, 3 / 7]), p_cf), [0.25, 0.75])
    np.testing.assert_allclose(calibrate(np.array([[0.5, 0.5]]), p_cf), [[0.2, 0.8]])
    scores = [ContinuationScores((math.log(0.9), math.log(0.1)), (1, 1)),
              ContinuationScores((math.log(0.5), math.log(0.5)), (1, 1))]
    np.testing.assert_allclose(content_free_prior(scores), [0.7, 0.3])
    np.testing.assert_allclose(softmax(np.array([0.0, 0.0, math.log(2)])), [0.25, 0.25, 0.5])


def test_zero_shot_calibration_recovers_the_unbiased_argmax():
    task = sentiment_task()
    lm = ScriptedLM(SENTIMENT_KEYWORDS, bias=BIAS)
    train, test = make_examples(TRAIN_ROWS), make_examples(TEST_ROWS, "test")
    # "really good": one positive keyword -> p ∝ [0.8 * 1, 0.2 * 3] = [4/7, 3/7]: biased to negative
    plain = ZeroShotConfig().fit(task, train, [], FitContext.of(lm))
    cal = ZeroShotConfig(calibrate=True).fit(task, train, [], FitContext.of(lm))
    assert cal.calibration.mode == "static"
    np.testing.assert_allclose(cal.calibration.p_cf, [0.8, 0.2])
    raw = plain.predict(test[:1])[0]
    fixed = cal.predict(test[:1])[0]
    assert raw.pred == "0" and fixed.pred == "1"
    np.testing.assert_allclose([raw.scores["0"], raw.scores["1"]], [4 / 7, 3 / 7])
    np.testing.assert_allclose([fixed.scores["0"], fixed.scores["1"]], [0.25, 0.75])
    assert fixed.logprobs == raw.logprobs  # raw log-likelihoods are kept uncalibrated

    gold = [ex.fields["label"] for ex in test]
    acc = lambda preds: np.mean([p.pred == g for p, g in zip(preds, gold)])  # noqa: E731
    # hand count: single-keyword positives ("really good", "good") flip to negative uncalibrated
    assert acc(plain.predict(test)) == 0.75
    assert acc(cal.predict(test)) == 1.0


def test_calibrate_strategy_defaults_and_few_shot():
    task = sentiment_task()
    lm = ScriptedLM(SENTIMENT_KEYWORDS, bias=BIAS)
    train, test = make_examples(TRAIN_ROWS), make_examples(TEST_ROWS, "test")
    cfg = CalibrateConfig()
    assert cfg.calibrate and cfg.k == 0
    few = CalibrateConfig(k=4, selection="balanced").fit(task, train, [], FitContext.of(lm))
    assert few.strategy == "calibrate" and len(few.demos) == 4
    np.testing.assert_allclose(few.calibration.p_cf, [0.8, 0.2])
    preds = few.predict(test)
    assert [p.pred for p in preds] == [ex.fields["label"] for ex in test]


def test_knn_calibrates_per_query_with_its_own_demos():
    task = sentiment_task()
    lm = ScriptedLM(SENTIMENT_KEYWORDS, bias=BIAS)
    train, test = make_examples(TRAIN_ROWS), make_examples(TEST_ROWS, "test")
    emb = KeywordEmbedder([w for ws in SENTIMENT_KEYWORDS.values() for w in ws])
    adapted = FewShotConfig(k=3, selection="knn", calibrate=True).fit(
        task, train, [], FitContext.of(lm, embedders={"minilm-l6": emb}))
    assert adapted.calibration.mode == "per_query" and adapted.calibration.p_cf is None
    lm.calls.clear()
    preds = adapted.predict(test)
    # one call: each query followed by its 3 content-free prompts (same demonstrations)
    assert lm.calls == [len(test) * 4]
    for p in preds:
        np.testing.assert_allclose(p.extra["p_cf"], [0.8, 0.2])
    assert [p.pred for p in preds] == [ex.fields["label"] for ex in test]
    # the query's prompt tokens include its content-free prompts
    ctx = adapted.context(adapted.content_free_texts()[0], adapted.demos_for(["so bad"])[0])
    assert preds[1].prompt_tokens > lm.count_tokens(ctx)


def test_calibration_rejects_generation_tasks():
    from adaptlab.errors import ConfigError

    task = sentiment_task(type="generation", labels={}, label_field=None, target="{{ label }}",
                          metric="exact_match")
    with pytest.raises(ConfigError, match="classification"):
        ZeroShotConfig(calibrate=True).fit(task, [], [], FitContext.of(ScriptedLM(SENTIMENT_KEYWORDS)))
