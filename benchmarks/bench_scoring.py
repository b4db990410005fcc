"""Benchmark: few-shot SST-2 scoring with and without the shared-prefix KV cache.

Builds an 8-shot prompt (instruction + random demonstrations + query) for N test sentences and scores the
label verbalizers with HFLM's naive batched path (every full sequence on its own, sorted and padded like
lm-evaluation-harness) and with its cached path: the two sides of the harness (``benchmarks/harness.py``),
each warmed up, then run ``--repeats`` times, alternated, in this process on ``--threads`` threads. Prints
and records examples/second (median of the repeats), the wall and CPU speed-ups, the largest
log-likelihood difference between the paths, each path's accuracy, peak RSS and MFU.

MFU: model FLOPs per second over this run's peak. FLOPs formula (forward scoring): ``2 x N x tokens
computed``, N = non-embedding parameters (``_hw.non_embedding_params``), tokens computed = what the path
actually ran (``ScoringStats.computed_tokens``; the output layer runs only at the read positions, attention
scores are not counted). Peak: ``_hw.shape_peak`` at the model's own GEMM shapes (``linear_shapes``),
``batch x mean context tokens`` rows, measured in this process at the same thread count and dtype before
the sides run. The harness fails the script if an MFU is above 1.

Reproduce the recorded figures (benchmarks/results/bench_scoring.json):

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --n 200 --threads 2
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --verbalizers multi   # multi-token labels
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --shots 96 --n 8 \\
        --out benchmarks/results/bench_scoring_many_shot.json                      # a many-shot prefix
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --smoke   # seconds: tiny model, 4 examples

Timings on a shared machine drift with its load: the paths alternate, every run keeps its load average,
and the CPU-time speed-up is recorded beside the wall-clock one.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from pathlib import Path

from _hw import linear_shapes, mfu, non_embedding_params, shape_peak
from harness import Harness, add_harness_arguments, command_line, log, smoke_defaults

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sst2"
INSTRUCTION = "Classify the sentiment of each movie review as positive or negative.\n\n"
VERBALIZERS = {
    "single": ("negative", "positive"),
    "multi": ("not good at all", "really quite good"),
}
PATHS = ("cached", "naive")


def read_sst2(path: Path) -> list[tuple[int, str]]:
    """(label, sentence) pairs from an SST-2 ``<label> <sentence>`` file."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append((int(line[0]), line[2:].strip()))
    return rows


def build_requests(train, test, *, shots: int, words: tuple[str, str], seed: int):
    """One shared few-shot prompt per query; verbalizers with a leading space."""
    from adaptlab.lm.base import LoglikelihoodRequest

    rng = random.Random(seed)
    demos = rng.sample(train, shots)
    prefix = INSTRUCTION + "".join(f"Review: {s}\nSentiment: {words[y]}\n\n" for y, s in demos)
    conts = tuple(" " + w for w in words)
    return [LoglikelihoodRequest(prefix + f"Review: {s}\nSentiment:", conts) for _, s in test]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def side(factory, mode: str, requests, labels, results: dict):
    """The harness side for one path: a fresh HFLM scores every request; the row keeps wall/CPU seconds,
    examples/second, tokens computed, accuracy and peak RSS; the scores go to ``results[mode]``."""
    def run() -> dict:
        lm = factory(prefix_cache=(mode == "cached"))
        start, start_cpu = time.perf_counter(), time.process_time()
        out = lm.loglikelihood(requests)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        results[mode] = out
        preds = [max(range(len(r.logprobs)), key=r.logprobs.__getitem__) for r in out]
        stats = lm.last_stats
        return {"wall_seconds": wall, "cpu_seconds": cpu, "examples_per_s": len(requests) / wall,
                "computed_tokens": stats.computed_tokens, "prefix_tokens": stats.prefix_tokens,
                "pad_tokens": stats.pad_tokens, "accuracy": sum(p == y for p, y in zip(preds, labels)) / len(labels),
                "peak_rss_mb": peak_rss_mb()}
    return run


def summarise(kind: str, runs: dict[str, list[dict]], results: dict, n: int, n_params: int, peak: dict) -> dict:
    """Medians per path, speed-ups (median and paired), agreement and MFU (2N x tokens computed / s / peak)."""
    out: dict = {"verbalizers": kind, "paths": {}}
    for mode, rows in runs.items():
        wall = statistics.median(r["wall_seconds"] for r in rows)
        tokens = rows[-1]["computed_tokens"]
        out["paths"][mode] = {"median_wall_seconds": wall,
                              "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in rows),
                              "examples_per_s": n / wall, "computed_tokens": tokens,
                              "accuracy": rows[-1]["accuracy"], "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
                              "mfu": mfu(2 * n_params * tokens, wall, peak["gflops"])}
    if len(runs) == 2:
        c, nv = out["paths"]["cached"], out["paths"]["naive"]
        out["speedup"] = nv["median_wall_seconds"] / c["median_wall_seconds"]
        out["cpu_speedup"] = nv["median_cpu_seconds"] / c["median_cpu_seconds"]
        out["paired_speedup"] = statistics.median(
            a["wall_seconds"] / b["wall_seconds"] for a, b in zip(runs["naive"], runs["cached"]))
        out["max_abs_loglik_diff"] = max(abs(a - b) for rc, rn in zip(results["cached"], results["naive"])
                                         for a, b in zip(rc.logprobs, rn.logprobs))
        out["same_predictions"] = all(
            max(range(len(a.logprobs)), key=a.logprobs.__getitem__)
            == max(range(len(b.logprobs)), key=b.logprobs.__getitem__)
            for a, b in zip(results["cached"], results["naive"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test examples to score")
    parser.add_argument("--shots", type=int, default=8, help="demonstrations in the prompt")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with stsa.binary.{train,test}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbalizers", choices=["single", "multi", "both"], default="single",
                        help="single-token labels, multi-token labels, or both (two groups)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="scoring paths to run (both: speed-up and agreement)")
    add_harness_arguments(parser, "bench_scoring.json")
    args = parser.parse_args(argv)
    smoke_defaults(parser, args, argv, n=4, shots=2, batch_size=4, model="tiny-random-llama")
    h = Harness("bench_scoring", args)
    h.command = command_line(__file__, argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model

    train = read_sst2(args.data / "stsa.binary.train")
    test = read_sst2(args.data / "stsa.binary.test")
    test = random.Random(args.seed + 1).sample(test, min(args.n, len(test)))
    labels = [y for y, _ in test]
    loaded = load_model(args.model, dtype=args.dtype)
    n_params = non_embedding_params(loaded.model)
    kinds = ["single", "multi"] if args.verbalizers == "both" else [args.verbalizers]
    requests = {k: build_requests(train, test, shots=args.shots, words=VERBALIZERS[k], seed=args.seed) for k in kinds}
    ctx_tok = {k: statistics.mean(token_len(loaded, r.context) for r in requests[k]) for k in kinds}
    rows = min(args.batch_size * round(max(ctx_tok.values())), 8192)
    peak = shape_peak(linear_shapes(loaded.model), rows, dtype=args.dtype, threads=torch.get_num_threads(),
                      repeats=2 if args.smoke else 5)

    def factory(prefix_cache: bool) -> HFLM:
        return HFLM.from_loaded(loaded, batch_size=args.batch_size, prefix_cache=prefix_cache)

    log(f"model {loaded.name} ({args.dtype}), {torch.get_num_threads()} threads; {len(test)} SST-2 test examples, "
        f"{args.shots}-shot, batch {args.batch_size}; in-run peak {peak['gflops']:.1f} GFLOP/s at {peak['shape']}; "
        f"MFU = 2 x {n_params:,} non-embedding params x tokens computed / s / peak")
    groups = []
    for kind in kinds:
        results: dict = {}
        runs = h.alternate(kind, {m: side(factory, m, requests[kind], labels, results) for m in args.paths})
        g = summarise(kind, runs, results, len(test), n_params, peak)
        g.update(context_tokens=ctx_tok[kind], label_tokens=[token_len(loaded, " " + w) for w in VERBALIZERS[kind]])
        groups.append(g)
        print(f"{kind}: " + ", ".join(f"{m} {p['examples_per_s']:.2f} ex/s (acc {p['accuracy']:.3f}, "
                                      f"{p['computed_tokens']} tokens, MFU {p['mfu']:.1%})"
                                      for m, p in g["paths"].items())
              + (f"; speed-up {g['speedup']:.2f}x wall, {g['cpu_speedup']:.2f}x cpu, max |dLL| "
                 f"{g['max_abs_loglik_diff']:.1e}" if "speedup" in g else ""))
    h.write({"model": loaded.name, "threads": torch.get_num_threads(), "non_embedding_params": n_params,
             "flops_formula": "2 x non_embedding_params x computed_tokens (forward scoring)",
             "peak": peak, "groups": groups})
    return 0


def token_len(loaded, text: str) -> int:
    return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


if __name__ == "__main__":
    raise SystemExit(main())
