"""Smoke tests of the peer benchmarks (adaptlab against lm-evaluation-harness and against ``transformers.Trainer``):
each runs in this process on the tiny random model with ``--smoke --repeats 1 --warmup 0``, and its record must
hold both sides' runs, the figures compared, a valid MFU and the harness's common part."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from test_finetune_toy import one_thread_torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SMOKE = ["--smoke", "--repeats", "1", "--warmup", "0"]

one_thread = pytest.fixture(scope="module", autouse=True)(one_thread_torch)


def run(name: str, tmp_path: Path) -> dict:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    out = tmp_path / f"{name}.json"
    assert importlib.import_module(name).main([*SMOKE, "--out", str(out)]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["benchmark"] == name and f"benchmarks/{name}.py" in doc["command"] and "--smoke" in doc["command"]
    assert doc["machine"]["cpu"] and doc["machine"]["packages"]["torch"] and len(doc["load_average_after"]) == 3
    return doc


def test_bench_lmeval_scores_the_same_contexts_on_both_sides(tmp_path):
    pytest.importorskip("lm_eval")  # installed by `make test` (the `bench` extra)
    doc = run("bench_lmeval", tmp_path)
    (s,) = doc["summary"]["by_shots"]
    assert s["same_contexts"] is True and s["n"] == 4
    # the same random weights on both sides: identical predictions, log-likelihoods equal to float noise
    assert s["agreement"] == 1.0 and s["max_abs_dll"] < 1e-3
    for side in ("lmeval", "adaptlab"):
        assert s[side]["eps"] > 0 and 0 < s[side]["mfu"] <= 1 and s[side]["tokens"]["positions"] > 0
    # lm-eval runs the whole padded batch through the full-vocabulary head: more FLOPs than adaptlab
    assert s["flops_ratio"] > 1
    assert {r["side"] for r in doc["runs"]} == {"lmeval", "adaptlab"} and all("lls" not in r for r in doc["runs"])
    assert set(doc["summary"]["sweeps"]) == {"2-shot lmeval", "2-shot adaptlab"}


def test_bench_trainer_trains_both_sides_on_the_same_tokens(tmp_path):
    doc = run("bench_trainer", tmp_path)
    s = doc["summary"]
    a, t = s["adaptlab"], s["trainer"]
    assert a["tokens"] == t["tokens"] > 0 and a["steps"] == t["steps"] == 2  # 16 examples, batch 8, one epoch
    assert a["padded_tokens"] >= a["tokens"] and t["padded_tokens"] >= t["tokens"]
    for side in (a, t):
        assert side["loop_seconds"] > 0 and 0 < side["mfu"] <= 1 and side["dev_loss"] > 0
    assert s["speedup_loop"] > 0 and len(s["paired_speedups_loop"]) == 1


def test_an_mfu_above_one_fails_before_anything_is_written(tmp_path):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    harness = importlib.import_module("harness")
    import argparse

    args = argparse.Namespace(repeats=1, warmup=0, out=tmp_path / "bad.json", smoke=True)
    h = harness.Harness("bench_x", args)
    with pytest.raises(harness.MFUError, match="mfu = 1.200 > 1"):
        h.write({"side": {"mfu": 1.2}})
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(SystemExit, match="< 3"):
        harness.Harness("bench_x", argparse.Namespace(repeats=2, warmup=1, out=tmp_path / "x.json", smoke=False))


def test_every_result_file_has_a_possible_mfu_and_every_cited_file_exists():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    harness = importlib.import_module("harness")
    results = BENCHMARKS / "results"
    files = sorted(results.glob("*.json"))
    assert files
    for f in files:
        harness.check_mfu(json.loads(f.read_text(encoding="utf-8")), f"{f.name}: ")
    import re

    for doc in ("benchmarks.md", "performance.md"):
        text = (REPO / "docs" / doc).read_text(encoding="utf-8")
        cited = set(re.findall(r"\b(bench_[a-z_]+\.json)", text))
        assert cited, doc
        assert {c for c in cited if not (results / c).is_file()} == set(), doc
