"""Benchmark: prompting strategies on SST-2 and AG News with the default model (SmolLM2-135M-Instruct).

SST-2 (tasks/sst2.yaml, test split): zero-shot, 8-shot random, 8-shot balanced and 8-shot kNN
(MiniLM, most similar demonstration last), each without and with contextual calibration, over seeds
(mean, std and min-max across seeds; zero-shot and kNN do not depend on the seed and run once).
AG News (tasks/agnews.yaml): uncalibrated vs calibrated accuracy, zero-shot and 8-shot random.

Seeds are the harness's repeats (``benchmarks/harness.py``): the seed-dependent configurations are its sides,
alternated, repeat i with seed i; each side's warm-up fits and scores its first 8 test examples only (an
accuracy benchmark: the warm-up only loads kernels and caches). The record keeps every (configuration,
seed) run with both accuracies, the predicted-label shares, tokens and seconds, and per task the summary
(mean, std, min, max over seeds per configuration). It is rewritten after each task.

Each configuration is scored ONCE: the calibrated artifact's predictions carry the raw label
log-likelihoods, whose argmax is the uncalibrated prediction for the very same prompt (static prompts:
calibration only adds the three content-free queries; kNN: every query is scored next to its own three
content-free prompts). Test subsets (``--limit``) are seeded random samples, the same for every row.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_prompting.py                 # full SST-2 test
    PYTHONPATH=src .venv/bin/python benchmarks/bench_prompting.py --limit 300 --agnews-limit 300
    PYTHONPATH=src .venv/bin/python benchmarks/bench_prompting.py --smoke   # seconds: tiny model, 4 examples, no kNN

Cost: every 8-shot static row scores the 1,821 SST-2 queries in ~26 computed tokens each (the shared
prefix once); a kNN row computes ~260 tokens per query (its own demonstrations, content-free prompts
grouped with it), ten times more, so the reference run caps kNN at 500 queries (the recorded figures,
benchmarks/results/bench_prompting.json):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_prompting.py --knn-limit 500 --agnews-limit 1000 \
        --threads 1 --repeats 3        # 90 min on 2 shared CPU cores

``tok/query`` counts all prompt tokens a query needs served alone; for kNN with per-query calibration
that includes its three content-free prompts (about a quarter of it is the query's own prompt).
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


def log(msg: str) -> None:
    print(msg, flush=True)


def run_config(name, cfg, task, splits, test, lm, embedder, progress, seed=0):
    """Fit + predict once; accuracy without and with calibration and the per-query cost."""
    import numpy as np

    from adaptlab.strategies import FitContext

    gold = [task.label_of(ex) for ex in test]
    keys = task.label_keys
    embedders = {cfg.embedder: embedder} if embedder is not None else None
    t0 = time.perf_counter()
    adapted = cfg.fit(task, splits.train, splits.dev, FitContext.of(lm, seed=seed, embedders=embedders))
    fit_s = time.perf_counter() - t0
    computed0 = lm.usage.computed_tokens
    t0 = time.perf_counter()
    preds = adapted.predict(test, progress=progress)
    pred_s = time.perf_counter() - t0
    raw = [keys[int(np.argmax([p.logprobs[k] for k in keys]))] for p in preds]
    cal = [p.pred for p in preds]
    row = {
        "name": name, "seed": seed, "n": len(test),
        "acc_raw": float(np.mean([r == g for r, g in zip(raw, gold)])),
        "acc_cal": float(np.mean([c == g for c, g in zip(cal, gold)])),
        "raw_pred_share": {k: raw.count(k) / len(raw) for k in keys},
        "cal_pred_share": {k: cal.count(k) / len(cal) for k in keys},
        "p_cf": adapted.calibration.p_cf,
        "prompt_tokens": float(np.mean([p.prompt_tokens for p in preds])),
        "computed_tokens_per_query": (lm.usage.computed_tokens - computed0) / len(test),
        "fit_s": fit_s, "predict_s": pred_s, "prefix_shared": adapted.knn is None,
    }
    log(f"  {name:<16} seed={seed} acc={row['acc_raw']:.4f} cal={row['acc_cal']:.4f} "
        f"tokens/q={row['prompt_tokens']:.0f} computed/q={row['computed_tokens_per_query']:.0f} "
        f"fit={fit_s:.1f}s predict={pred_s:.1f}s")
    return row


def summarise(rows):
    """Per configuration: mean/std/min/max over seeds of both accuracies."""
    out = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        rs = [r for r in rows if r["name"] == name]
        s = {"seeds": len(rs), "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in rs),
             "predict_s": statistics.mean(r["predict_s"] for r in rs)}
        for key in ("acc_raw", "acc_cal"):
            vals = [r[key] for r in rs]
            s[key] = {"mean": statistics.mean(vals), "std": statistics.pstdev(vals),
                      "min": min(vals), "max": max(vals)}
        out[name] = s
    return out


def table(title, summary, n):
    def fmt(a):
        if a["min"] == a["max"]:
            return f"{a['mean']:.3f}"
        return f"{a['mean']:.3f} ± {a['std']:.3f} [{a['min']:.3f}-{a['max']:.3f}]"

    lines = [f"\n{title} (n={n})",
             f"{'strategy':<16} {'seeds':>5}  {'uncalibrated':<28} {'calibrated':<28} {'tok/query':>9}",
             "-" * 92]
    for name, s in summary.items():
        lines.append(f"{name:<16} {s['seeds']:>5}  {fmt(s['acc_raw']):<28} {fmt(s['acc_cal']):<28} "
                     f"{s['prompt_tokens']:>9.0f}")
    return "\n".join(lines)


WARMUP_EXAMPLES = 8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    ap.add_argument("--limit", type=int, default=None, help="SST-2 test examples (default: all 1821)")
    ap.add_argument("--knn-limit", type=int, default=None,
                    help="SST-2 test examples for kNN rows (default: --limit; kNN prompts share no prefix)")
    ap.add_argument("--agnews-limit", type=int, default=1000, help="AG News test examples (of 7600)")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["sst2", "agnews", "knn"])
    ap.add_argument("--progress", action="store_true")
    add_harness_arguments(ap, "bench_prompting.json")
    args = ap.parse_args(argv)
    smoke_defaults(ap, args, argv, model="tiny-random-llama", limit=4, agnews_limit=4, k=2, skip=["knn"])
    h = Harness("bench_prompting", args)
    h.command = command_line(__file__, argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from adaptlab.data import load_splits, load_task, seeded_sample
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model
    from adaptlab.models.embeddings import load_embedder
    from adaptlab.strategies import FewShotConfig, ZeroShotConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = HFLM.from_loaded(load_model(args.model))
    log(f"model {lm.name}, torch threads {torch.get_num_threads()}, seeds 0-{h.repeats - 1}")
    summary: dict = {"model": lm.name, "threads": torch.get_num_threads(), "seeds": list(range(h.repeats))}

    def seeded(name, cfg, task, splits, test):
        """A harness side: call k fits with seed k - warmup (warm-ups: seed 0 on the first examples)."""
        calls = [0]

        def run() -> dict:
            k, calls[0] = calls[0], calls[0] + 1
            warm = k < h.warmup
            return run_config(name, cfg, task, splits, test[:WARMUP_EXAMPLES] if warm else test, lm, None,
                              args.progress, seed=0 if warm else k - h.warmup)
        return run

    def once(group, name, cfg, task, splits, test, embedder=None):
        """A configuration that does not depend on the seed: run once, kept as a run of its own side."""
        start = time.perf_counter()
        row = run_config(name, cfg, task, splits, test, lm, embedder, args.progress)
        return h.record(group, name, {**row, "wall_seconds": time.perf_counter() - start})

    for group, path, limit in (("sst2", "sst2.yaml", args.limit), ("agnews", "agnews.yaml", args.agnews_limit)):
        if group in args.skip:
            continue
        task = load_task(REPO / "tasks" / path)
        splits = load_splits(task)
        test = seeded_sample(splits.test, limit, 0)
        log(f"{group}: {len(splits.train)} train, {len(splits.dev)} dev, {len(test)} test")
        rows = [once(group, "zero_shot", ZeroShotConfig(calibrate=True), task, splits, test)]
        selections = ("random", "balanced") if group == "sst2" else ("random",)
        configs = {f"{args.k}-shot {sel}": FewShotConfig(k=args.k, selection=sel, calibrate=True) for sel in selections}
        sides = {name: seeded(name, cfg, task, splits, test) for name, cfg in configs.items()}
        for side_rows in h.alternate(group, sides).values():
            rows += side_rows
        if group == "sst2" and "knn" not in args.skip:
            knn_test = seeded_sample(splits.test, args.knn_limit or limit, 0)
            rows.append(once(group, f"{args.k}-shot knn", FewShotConfig(k=args.k, selection="knn", calibrate=True),
                             task, splits, knn_test, load_embedder()))
        summary[group] = {"n": len(test), "summary": summarise(rows)}
        log(table(f"{group} accuracy", summary[group]["summary"], len(test)))
        h.write(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
