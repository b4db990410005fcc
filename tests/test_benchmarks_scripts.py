"""Smoke tests of the benchmark scripts: each runs with ``--smoke --repeats 1 --warmup 0`` on the tiny model and
tiny sizes, in this process through its ``main(argv)``, and its JSON record must hold the command, the machine,
the load averages, every side's runs and the summary figures the script promises.

Scripts that run ``adaptlab`` commands run them in-process under ``--smoke`` (``harness.run_adaptlab``): a
subprocess would spend seconds importing torch each time on the shared 2-core machine."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from test_finetune_toy import one_thread_torch, write_toy_task

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SMOKE = ["--smoke", "--repeats", "1", "--warmup", "0"]

one_thread = pytest.fixture(scope="module", autouse=True)(one_thread_torch)


def bench(name: str) -> Any:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def smoke(name: str, tmp_path: Path, *args: str, after: tuple[str, ...] = (), rc: int = 0) -> dict[str, Any]:
    """Run ``benchmarks/NAME.py ARGS --smoke ... AFTER``; check the record's common part and return it."""
    out = tmp_path / "x.json"
    argv = [*args, *SMOKE, "--out", str(out), *after]
    assert bench(name).main(argv) == rc
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["benchmark"] == name
    assert f"benchmarks/{name}.py" in doc["command"] and "--smoke" in doc["command"] and str(out) in doc["command"]
    assert doc["machine"]["cpu"] and doc["machine"]["logical_cores"] >= 1 and doc["machine"]["packages"]["torch"]
    for key in ("load_average_before", "load_average_after"):
        assert len(doc[key]) == 3 and all(x >= 0 for x in doc[key])
    assert doc["settings"]["smoke"] is True
    return doc


def sides(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Timed runs by side; each has its wall seconds, group and load average."""
    out: dict[str, list[dict[str, Any]]] = {}
    for run in doc["runs"]:
        assert run["wall_seconds"] >= 0 and run["group"] and "load_average_1m" in run
        if not run["warmup"]:
            out.setdefault(run["side"], []).append(run)
    return out


def finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_bench_scoring(tmp_path: Path) -> None:
    doc = smoke("bench_scoring", tmp_path)
    runs = sides(doc)
    assert set(runs) == {"cached", "naive"} and all(len(r) == 1 for r in runs.values())
    assert runs["cached"][0]["computed_tokens"] < runs["naive"][0]["computed_tokens"]
    s = doc["summary"]
    assert s["model"] == "tiny-random-llama" and s["peak"]["gflops"] > 0 and s["peak"]["per_shape"]
    assert "2 x non_embedding_params" in s["flops_formula"]
    (g,) = s["groups"]
    assert set(g["paths"]) == {"cached", "naive"}
    for p in g["paths"].values():
        assert 0 < p["mfu"] <= 1 and p["examples_per_s"] > 0 and 0 <= p["accuracy"] <= 1
    assert finite(g["speedup"], g["cpu_speedup"], g["paired_speedup"])
    assert g["max_abs_loglik_diff"] < 1e-3 and g["same_predictions"] is True


def test_bench_serving(tmp_path: Path) -> None:
    doc = smoke("bench_serving", tmp_path)
    runs = sides(doc)
    assert set(runs) == {"cold", "warm"}
    assert all(len(r["latency_ms"]) == 3 for rs in runs.values() for r in rs)
    prompts = {p["name"]: p for p in doc["summary"]["prompts"]}
    assert set(prompts) == {"zero-shot", "2-shot balanced"}
    for p in prompts.values():
        assert finite(p["cold_ms"], p["warm_ms"], p["speedup"]) and p["max_abs_dlogprob"] < 1e-3
    shot = prompts["2-shot balanced"]
    assert shot["warm_tokens"] < shot["cold_tokens"]  # the kept prefix is not computed again


def test_bench_demo(tmp_path: Path) -> None:
    doc = smoke("bench_demo", tmp_path)
    (run,) = sides(doc)["demo"]
    assert run["exit_code"] == 0 and "adaptlab demo" in run["output_tail"] and run["peak_rss_tree_sampled_mb"] > 0
    s = doc["summary"]
    assert s["demo_args"] == ["--model", "tiny-random-llama", "--help"] and s["ok"] == s["runs"] == 1
    assert s["median_wall_seconds"] > 0 and s["peak_rss_largest_process_mb"] > 0


def test_bench_demo_refuses_an_option_the_demo_lost(tmp_path: Path) -> None:
    """What the smoke is for: an option the demo no longer takes fails the script."""
    doc = smoke("bench_demo", tmp_path, after=("--", "--no-such-option"), rc=1)
    assert doc["summary"]["ok"] == 0 and sides(doc)["demo"][0]["exit_code"] == 2


def test_bench_peak(tmp_path: Path) -> None:
    doc = smoke("bench_peak", tmp_path)
    assert set(sides(doc)) == {"matmul", "shapes@16"}
    s = doc["summary"]
    assert s["model"] == "tiny-random-llama" and s["shapes"]
    f32 = s["dtypes"]["float32"]
    assert f32["matmul"]["gflops"] > 0 and f32["matmul"]["size"] == 128
    shaped = f32["shapes@16"]
    assert shaped["gflops"] == max(shaped["per_shape"].values()) > 0 and shaped["rows"] == 16


def test_bench_grouping(tmp_path: Path) -> None:
    doc = smoke("bench_grouping", tmp_path)
    runs = sides(doc)
    assert set(runs) == {"grouped", "random"}
    assert [r["grouped"] for r in runs["grouped"] + runs["random"]] == [True, False]
    for side in doc["summary"]["sides"].values():
        assert side["runs"] == 1 and finite(side["accuracy_mean"], side["best_dev_loss_mean"],
                                            side["tokens_per_second_median"])
    (pair,) = doc["summary"]["paired"]
    assert pair["seed"] == 0 and finite(pair["accuracy_diff"], pair["best_dev_loss_diff"])


def test_bench_prompting(tmp_path: Path) -> None:
    doc = smoke("bench_prompting", tmp_path)
    runs = sides(doc)
    assert set(runs) == {"zero_shot", "2-shot random", "2-shot balanced"}
    assert {(r["group"], r["side"], r["seed"]) for rs in runs.values() for r in rs} == {
        ("sst2", "zero_shot", 0), ("sst2", "2-shot random", 0), ("sst2", "2-shot balanced", 0),
        ("agnews", "zero_shot", 0), ("agnews", "2-shot random", 0)}
    s = doc["summary"]
    assert s["seeds"] == [0] and s["sst2"]["n"] == s["agnews"]["n"] == 4
    for task in ("sst2", "agnews"):
        for row in s[task]["summary"].values():
            assert 0 <= row["acc_raw"]["mean"] <= 1 and 0 <= row["acc_cal"]["mean"] <= 1 and row["seeds"] == 1


def test_bench_finetune(tmp_path: Path) -> None:
    doc = smoke("bench_finetune", tmp_path)
    runs = sides(doc)
    assert set(runs) == {"lora", "full"}
    for method, formula in (("lora", "4N"), ("full", "6N")):
        (run,) = runs[method]
        assert "error" not in run, run.get("error")
        assert run["flops_per_token"] == formula and 0 < run["mfu"] <= 1 and run["peak_gflops"] > 0
    table = {r["method"]: r for r in doc["summary"]["methods"]}
    assert table["lora"]["trainable_params"] < table["full"]["trainable_params"]
    for row in table.values():
        assert row["failed"] == 0 and 0 <= row["accuracy_mean"] <= 1 and 0 < row["mfu"] <= 1
    assert doc["summary"]["non_embedding_params"] > 0


def test_bench_gpu_paths(tmp_path: Path) -> None:
    doc = smoke("bench_gpu_paths", tmp_path)
    runs = sides(doc)
    assert set(runs) == {"lora no", "lora bf16", "few_shot k=2"}
    assert all(r["rc"] == 0 for rs in runs.values() for r in rs)
    s = doc["summary"]
    assert s["device"] == "cpu" and "tests" not in s
    assert s["sides"]["lora no"]["tokens_per_second"] > 0 and s["sides"]["lora bf16"]["peak_memory_bytes"] > 0
    assert s["sides"]["few_shot k=2"]["latency_p50_s"] > 0


def test_bench_gpu_paths_without_a_gpu_says_so(tmp_path: Path, capsys, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench("bench_gpu_paths").main(["--out", str(tmp_path / "x.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory) -> Path:
    """A finished `adaptlab compare` run on the tiny model: zero-shot, 2-shot plain and a 2-step LoRA."""
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.runner import run_experiment

    root = tmp_path_factory.mktemp("compare")
    write_toy_task(root / "task")
    exp = root / "exp.yaml"
    exp.write_text("name: toy\ntask: task/task.yaml\nmodel: tiny-random-llama\ntrain_sizes: [8]\nseeds: [0]\n"
                   "limit: 8\nepochs: 1\nstrategies:\n  - zero_shot\n  - name: few_shot\n"
                   "    options: {k: 2, selection: balanced, format: plain}\n  - name: lora\n    label: lora\n"
                   "    options: {max_steps: 2, batch_size: 4, eval_limit: 4, rank: 4}\n"
                   "scenario: {queries_per_month: 1000, price_per_hour: 1.0}\n", encoding="utf-8")
    records = run_experiment(load_experiment(exp), root / "run", progress=False)
    assert [r.status for r in records] == ["done"] * 3
    return root / "run"


def test_bench_fair_compare(tmp_path: Path, compare_run: Path) -> None:
    doc = smoke("bench_fair_compare", tmp_path, str(compare_run), "--before", "few_shot k=2 balanced format=plain")
    assert doc["runs"] == [] and doc["repeats"] is None
    (r,) = doc["summary"]["run_folders"]
    assert r["experiment"] == "toy" and len(r["cells"]) == 3
    assert r["before"]["variant"] == "few_shot k=2 balanced format=plain" and finite(r["before"]["mean"])
    assert r["after"]["variant"] and r["best_finetune"]["variant"] == "lora"
    for serving in ("batched", "single"):
        assert r[serving]["decision"] and "break_even" in r[serving]


def test_bench_large_vs_small(tmp_path: Path, compare_run: Path) -> None:
    doc = smoke("bench_large_vs_small", tmp_path, str(compare_run))
    assert doc["runs"] == [] and doc["repeats"] is None
    (r,) = doc["summary"]["run_folders"]
    assert r["experiment"] == "toy" and {c["variant"] for c in r["cells"]} >= {"zero_shot", "lora"}
    assert all(finite(c["value"], c["usd_per_1k"]) for c in r["cells"])
    assert r["decision"] and {o["arm"] for o in r["options"]} >= {"prompt", "finetune"}
