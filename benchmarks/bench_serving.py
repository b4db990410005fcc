"""Benchmark: single-query serving latency with and without a kept prompt prefix (SST-2, default model).

A server answers one query at a time. Without a prefix cache every query of a few-shot prompt runs its
demonstrations again; a serving engine with prefix caching (vLLM automatic prefix caching, llama.cpp
``cache_prompt``) runs them once and then only each query's own tokens. This prints, for zero-shot and
k-shot balanced prompts (`adaptlab.strategies.prompt`), the median single-query latency cold (each query computed
in full) and warm (`HFLM.keep_prefix`, the previous query's prefix kept), the tokens computed per query,
and the warm speed-up, measured side by side: each query is answered cold, then warm, so load drift on a
shared machine hits both alike. Scores are the same both ways (checked). Zero-shot is also the serving
cost of a merged LoRA/IA3/full model, which is prompted in the zero-shot format.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_serving.py --queries 30 --threads 1

This is what ``scenario.prefix_cache: true`` prices in a compare run (``latency_p50_warm_s``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def measure(name: str, adapted, cold_lm, warm_lm, test) -> dict:
    """Cold and warm single-query latency and computed tokens, alternating per query (two `HFLM`s on one
    model: ``warm_lm`` keeps its prefix between calls, ``cold_lm`` does not)."""
    cold_s, warm_s, cold_tok, warm_tok, diffs = [], [], [], [], []
    on = {id(cold_lm): adapted.bound(cold_lm), id(warm_lm): adapted.bound(warm_lm)}
    with warm_lm.keep_prefix():
        on[id(warm_lm)].predict([test[-1]])  # fill the kept prefix once (a server that has seen one query)
        for ex in test[:-1]:
            for lm, secs, toks in ((cold_lm, cold_s, cold_tok), (warm_lm, warm_s, warm_tok)):
                c0, t0 = lm.usage.computed_tokens, time.perf_counter()
                pred = on[id(lm)].predict([ex])[0]
                secs.append(time.perf_counter() - t0)
                toks.append(lm.usage.computed_tokens - c0)
                if lm is cold_lm:
                    cold = pred
            diffs += [abs(cold.logprobs[k] - pred.logprobs[k]) for k in cold.logprobs]
    row = {"name": name, "queries": len(cold_s), "cold_ms": 1000 * statistics.median(cold_s), "warm_ms": 1000 * statistics.median(warm_s),
           "cold_tokens": statistics.fmean(cold_tok), "warm_tokens": statistics.fmean(warm_tok),
           "max_abs_dlogprob": max(diffs)}
    row["speedup"] = row["cold_ms"] / row["warm_ms"]
    print(f"{name:<22} {row['cold_ms']:8.1f} {row['warm_ms']:8.1f} {row['speedup']:6.2f}x "
          f"{row['cold_tokens']:8.1f} {row['warm_tokens']:8.1f}   {row['max_abs_dlogprob']:.1e}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=30, help="test queries per prompt (plus one to warm up)")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 4, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from adaptlab.data import load_splits, load_task, seeded_sample
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model
    from adaptlab.strategies import FewShotConfig, FitContext, ZeroShotConfig

    torch.set_num_threads(args.threads)
    loaded = load_model()
    lm, warm_lm = HFLM.from_loaded(loaded), HFLM.from_loaded(loaded)
    task = load_task(REPO / "tasks" / "sst2.yaml")
    splits = load_splits(task)
    test = seeded_sample(splits.test, args.queries + 1, 0)
    print(f"model {lm.name}, torch threads {torch.get_num_threads()}, {args.queries} SST-2 test queries each")
    print(f"{'prompt':<22} {'cold ms':>8} {'warm ms':>8} {'speed':>7} {'cold tok':>8} {'warm tok':>8}   max|dLL|")
    rows = []
    for k in args.shots:
        cfg = ZeroShotConfig() if k == 0 else FewShotConfig(k=k, selection="balanced")
        adapted = cfg.fit(task, splits.train, splits.dev, FitContext.of(lm, seed=0))
        rows.append(measure("zero-shot" if k == 0 else f"{k}-shot balanced", adapted, lm, warm_lm, test))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
