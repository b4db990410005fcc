"""Benchmark: single-query serving latency with and without a kept prompt prefix (SST-2, default model).

A server answers one query at a time. Without a prefix cache every query of a few-shot prompt runs its
demonstrations again; a serving engine with prefix caching (vLLM automatic prefix caching, llama.cpp
``cache_prompt``) runs them once and then only each query's own tokens. For zero-shot and k-shot balanced
prompts (`adaptlab.strategies.prompt`) this measures two harness sides (``benchmarks/harness.py``): **cold**
(each query computed in full) and **warm** (`HFLM.keep_prefix`, the previous query's prefix kept; one
untimed query fills it first). A side's run answers every query one at a time; sides alternate run by run
after a warm-up, on ``--threads`` threads in this process. Recorded per run: every query's latency, its
median and the tokens computed per query; summary: median single-query latency cold and warm (median of
the runs' medians), tokens per query, the warm speed-up and the largest log-probability difference
between the two (scores are the same both ways). Zero-shot is also the serving cost of a merged
LoRA/IA3/full model, which is prompted in the zero-shot format.

Reproduce the recorded figures (benchmarks/results/bench_serving.json):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_serving.py --queries 30 --threads 1
    PYTHONPATH=src .venv/bin/python benchmarks/bench_serving.py --smoke     # seconds: tiny model, 3 queries

This is what ``scenario.prefix_cache: true`` prices in a compare run (``latency_p50_warm_s``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

from harness import Harness, add_harness_arguments, command_line, smoke_defaults

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def side(predictor, lm, test, warm: bool, last: dict):
    """One run of a side: every query of ``test[:-1]`` alone, timed; warm keeps ``lm``'s prefix between
    queries after filling it with ``test[-1]`` (untimed). The predictions go to ``last``."""
    def one_by_one() -> dict:
        secs, toks, preds = [], [], []
        for ex in test[:-1]:
            c0, t0 = lm.usage.computed_tokens, time.perf_counter()
            preds.append(predictor.predict([ex])[0])
            secs.append(time.perf_counter() - t0)
            toks.append(lm.usage.computed_tokens - c0)
        last["warm" if warm else "cold"] = preds
        return {"wall_seconds": sum(secs), "latency_ms": [1000 * s for s in secs],
                "median_ms": 1000 * statistics.median(secs), "tokens_per_query": statistics.fmean(toks)}

    def run() -> dict:
        if not warm:
            return one_by_one()
        with lm.keep_prefix():
            predictor.predict([test[-1]])  # fill the kept prefix once (a server that has seen one query)
            return one_by_one()
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=30, help="test queries per prompt (plus one to fill the prefix)")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 4, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    add_harness_arguments(ap, "bench_serving.json")
    args = ap.parse_args(argv)
    smoke_defaults(ap, args, argv, queries=3, shots=[0, 2], model="tiny-random-llama")
    h = Harness("bench_serving", args)
    h.command = command_line(__file__, argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from adaptlab.data import load_splits, load_task, seeded_sample
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model
    from adaptlab.strategies import FewShotConfig, FitContext, ZeroShotConfig

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    cold_lm, warm_lm = HFLM.from_loaded(loaded), HFLM.from_loaded(loaded)
    task = load_task(REPO / "tasks" / "sst2.yaml")
    splits = load_splits(task)
    test = seeded_sample(splits.test, args.queries + 1, 0)
    print(f"model {cold_lm.name}, torch threads {torch.get_num_threads()}, {args.queries} SST-2 test queries each")
    print(f"{'prompt':<22} {'cold ms':>8} {'warm ms':>8} {'speed':>7} {'cold tok':>8} {'warm tok':>8}   max|dLL|")
    groups = []
    for k in args.shots:
        name = "zero-shot" if k == 0 else f"{k}-shot balanced"
        cfg = ZeroShotConfig() if k == 0 else FewShotConfig(k=k, selection="balanced")
        adapted = cfg.fit(task, splits.train, splits.dev, FitContext.of(cold_lm, seed=0))
        last: dict = {}
        runs = h.alternate(name, {"cold": side(adapted.bound(cold_lm), cold_lm, test, False, last),
                                  "warm": side(adapted.bound(warm_lm), warm_lm, test, True, last)})
        row = {"name": name, "shots": k, "queries": len(test) - 1,
               "cold_ms": statistics.median(r["median_ms"] for r in runs["cold"]),
               "warm_ms": statistics.median(r["median_ms"] for r in runs["warm"]),
               "cold_tokens": statistics.median(r["tokens_per_query"] for r in runs["cold"]),
               "warm_tokens": statistics.median(r["tokens_per_query"] for r in runs["warm"]),
               "max_abs_dlogprob": max(abs(c.logprobs[key] - w.logprobs[key])
                                       for c, w in zip(last["cold"], last["warm"]) for key in c.logprobs)}
        row["speedup"] = row["cold_ms"] / row["warm_ms"]
        groups.append(row)
        print(f"{name:<22} {row['cold_ms']:8.1f} {row['warm_ms']:8.1f} {row['speedup']:6.2f}x "
              f"{row['cold_tokens']:8.1f} {row['warm_tokens']:8.1f}   {row['max_abs_dlogprob']:.1e}", flush=True)
    h.write({"model": cold_lm.name, "threads": torch.get_num_threads(), "prompts": groups})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
