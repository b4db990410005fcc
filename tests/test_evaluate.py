"""The evaluator's bookkeeping and the metrics.json schema, plus run_single / predict_texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptlab.evaluate import METRICS_FILE, SCHEMA, EvalSettings, evaluate, save_metrics
from adaptlab.experiment.single import SingleRun, run_single
from adaptlab.predict import predict_texts, read_input_rows
from adaptlab.strategies import FewShotConfig, FitContext, ModelPool, ZeroShotConfig
from fakes import (SENTIMENT_KEYWORDS, TEST_ROWS, TRAIN_ROWS, ScriptedLM, make_examples,
                   sentiment_task)

TOP_KEYS = {"schema", "task", "model", "strategy", "config", "split", "n", "metric", "report",
            "cost", "predictions"}


def test_evaluate_bookkeeping_and_schema(tmp_path):
    task = sentiment_task()
    lm = ScriptedLM(SENTIMENT_KEYWORDS, bias={"negative": 0.8, "positive": 0.2})
    train, test = make_examples(TRAIN_ROWS), make_examples(TEST_ROWS * 3, "test")
    adapted = FewShotConfig(k=2, selection="balanced").fit(task, train, [], FitContext.of(lm))
    assert adapted.lm is lm  # the evaluator predicts (and reads usage) through the artifact's own LM
    result = evaluate(adapted, task, test, seed=1, settings=EvalSettings(latency_sample=3))
    doc = result.to_json()
    assert TOP_KEYS <= set(doc) and doc["schema"] == SCHEMA
    assert doc["n"] == len(test) == len(doc["predictions"])
    assert [p["id"] for p in doc["predictions"]] == [ex.id for ex in test]
    m = doc["metric"]
    assert set(m) == {"name", "value", "ci_low", "ci_high", "confidence"} and m["name"] == "accuracy"
    assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["ci_low"] < m["ci_high"]
    correct = [p["correct"] for p in doc["predictions"]]
    assert m["value"] == pytest.approx(np.mean(correct))
    assert all(p["correct"] == (p["pred"] == p["gold"]) for p in doc["predictions"])
    assert doc["predictions"][0]["input"] == TEST_ROWS[0][0]
    assert doc["report"]["confusion"] and sum(map(sum, doc["report"]["confusion"])) == len(test)
    assert set(doc["cost"]["train"]) >= {"seconds", "flops", "peak_memory_bytes", "trainable_params",
                                         "artifact_bytes"}
    q = doc["cost"]["query"]
    assert set(q) >= {"prompt_tokens", "flops", "latency_s", "latency_p50_s", "prefix_shared"}
    expected_tokens = np.mean([lm.count_tokens(adapted.context(t, adapted.demos)) for t, _ in
                               TEST_ROWS])
    assert q["prompt_tokens"] == pytest.approx(expected_tokens)
    assert q["prefix_shared"] is True and q["latency_p50_s"] >= 0
    assert q["latency_p50_warm_s"] is None  # the scripted LM keeps no prompt prefix between calls
    # FLOPs = 2 * N * (prompt + 2 scored label tokens) per query for the scripted 1000-parameter LM
    assert q["flops"] == int(2 * 1000 * (expected_tokens + 2))
    assert doc["usage"]["requests"] == len(test)  # the timed single queries are not counted
    path = save_metrics(result, tmp_path)
    assert path == tmp_path / METRICS_FILE and json.loads(path.read_text())["n"] == len(test)
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_FILE]  # no temp files left


def test_evaluate_generation():
    task = sentiment_task(type="generation", labels={}, label_field=None, target="{{ label }}",
                          metric="exact_match")
    lm = ScriptedLM({}, generations={"good": " 1", "great": " 1", "fun": " 1"})
    test = make_examples(TEST_ROWS, "test")
    result = evaluate(ZeroShotConfig().fit(task, [], [], FitContext.of(lm)), task, test,
                      settings=EvalSettings(latency_sample=0))
    doc = result.to_json()
    gold = [lab for _, lab in TEST_ROWS]
    preds = [p["pred"] for p in doc["predictions"]]
    assert doc["metric"]["value"] == pytest.approx(np.mean([p == g for p, g in zip(preds, gold)]))
    assert doc["cost"]["query"]["latency_p50_s"] is None and "score" in doc["predictions"][0]


def _write_task(tmp_path):
    for split, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        lines = [json.dumps({"id": f"{split}-{i}", "text": t, "label": lab})
                 for i, (t, lab) in enumerate(rows)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "task.yaml").write_text(
        "name: toy\ntype: classification\ninstruction: Classify the sentiment.\n"
        "data: {train: train.jsonl, test: test.jsonl, dev_size: 4}\ninput: '{{ text }}'\n"
        "labels: {0: negative, 1: positive}\nmetric: accuracy\n")
    from adaptlab.data import load_task

    return load_task(tmp_path / "task.yaml")


def test_run_single_and_predict_texts(tmp_path):
    task = _write_task(tmp_path)
    lm = ScriptedLM(SENTIMENT_KEYWORDS)
    out = tmp_path / "run"
    result = run_single(task, "prompt_search", {"k": 2, "n_demo_sets": 2, "max_candidates": 4},
                        ModelPool.of(lm), SingleRun(out_dir=out, limit=6, progress=False))
    doc = json.loads((out / METRICS_FILE).read_text())
    assert doc["strategy"] == "prompt_search" and doc["n"] == 6 == result.n
    assert doc["search"]["n_candidates"] == 4 and len(doc["search"]["candidates"]) == 4
    assert doc["cost"]["train"]["artifact_bytes"] == (out / "adapted.json").stat().st_size
    assert doc["cost"]["train"]["seconds"] >= doc["search"]["seconds"]
    made = []

    def factory(name):
        made.append(name)
        return lm

    preds = predict_texts(out, factory, ["great fun", "awful"])
    assert made == ["scripted"] and [p.pred for p in preds] == ["1", "0"]
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "so dull"}\n\n{"text": "good"}\n')
    rows = read_input_rows(tmp_path / "in.jsonl")
    preds = predict_texts(out, factory, rows=rows)
    assert [(p.id, p.pred) for p in preds] == [("a", "0"), ("input:2", "1")]


def test_run_single_rejects_unknown_options(tmp_path):
    from adaptlab.errors import ConfigError

    task = _write_task(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'k'"):
        run_single(task, "few_shot", {"kk": 2}, ModelPool.of(ScriptedLM(SENTIMENT_KEYWORDS)),
                   SingleRun(out_dir=tmp_path / "x"))


@pytest.mark.integration
def test_real_model_on_the_demo_task(tmp_path, default_loaded):
    from adaptlab.data import builtin_task
    from adaptlab.lm.hf import HFLM

    task = builtin_task("demo")
    lm = HFLM.from_loaded(default_loaded)
    result = run_single(task, "few_shot", {"k": 4, "selection": "balanced", "calibrate": True},
                        ModelPool.of(lm), SingleRun(out_dir=tmp_path, limit=16, progress=False, latency_sample=2))
    doc = result.to_json()
    assert doc["n"] == 16 and doc["model"] == "smollm2-135m-instruct"
    assert doc["metric"]["value"] > 1 / len(task.labels)  # better than chance on 7 intents
    q = doc["cost"]["query"]
    assert q["prompt_tokens"] > 50 and q["flops"] > 0 and q["latency_p50_s"] > 0
    assert q["flops_amortized"] < q["flops"]  # the shared prefix is computed once
    assert q["latency_p50_warm_s"] > 0 and lm._kept is None  # measured with the prefix kept, then dropped
    preds = predict_texts(tmp_path, lambda name: lm, ["I was charged twice this month"])
    assert preds[0].pred in task.labels
