"""Benchmark: few-shot SST-2 scoring with and without the shared-prefix KV cache.

Builds an 8-shot prompt (instruction + random demonstrations + query) for N test sentences, scores the
label verbalizers with HFLM's naive batched path (every full sequence on its own, sorted and padded like
lm-evaluation-harness) and with its cached path, side by side, and prints examples/second (median of the
repeats), the speed-up, the largest log-likelihood difference between the paths, each path's accuracy,
the peak RSS and each path's model FLOPs utilisation (MFU: 2 x non-embedding parameters x tokens run,
per second, over this machine's float32/bfloat16 matmul peak at the same thread count; see ``_hw.py``).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --n 200 --repeats 3
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --verbalizers multi   # multi-token labels
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --paths cached --threads 2 --batch-size 64
    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py --shots 96 --n 8 \
        --out benchmarks/results/bench_scoring_many_shot.json                      # a many-shot prefix

Timings on a shared machine drift with its load: the paths run interleaved, the load average is printed,
and the CPU-time speed-up is shown beside the wall-clock one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sst2"
INSTRUCTION = "Classify the sentiment of each movie review as positive or negative.\n\n"
VERBALIZERS = {
    "single": ("negative", "positive"),
    "multi": ("not good at all", "really quite good"),
}


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


def run(lm_factory, requests, labels, repeats: int, paths: tuple[str, ...] = ("cached", "naive")) -> dict:
    """Time both paths after an untimed warm-up, interleaved and alternated (so load drift hits both alike), and
    compare their scores and accuracies."""
    wall: dict[str, list[float]] = {m: [] for m in paths}
    cpu: dict[str, list[float]] = {m: [] for m in paths}
    results, rss, stats = {}, {}, {}
    for mode in paths:  # warm-up: allocator, kernels and tokenizer caches, untimed
        lm_factory(prefix_cache=(mode == "cached")).loglikelihood(requests[:2])
    for i in range(repeats):
        for mode in (paths if i % 2 == 0 else tuple(reversed(paths))):  # sides alternated
            lm = lm_factory(prefix_cache=(mode == "cached"))
            start, start_cpu = time.perf_counter(), time.process_time()
            results[mode] = lm.loglikelihood(requests)
            wall[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - start_cpu)
            print(f"  {mode:<6} run {len(wall[mode])}: {wall[mode][-1]:.1f} s wall, {cpu[mode][-1]:.1f} s cpu",
                  file=sys.stderr, flush=True)
            stats[mode] = lm.last_stats
            rss.setdefault(mode, peak_rss_mb())
    both = len(results) == 2
    diff = max(abs(a - b) for rc, rn in zip(results["cached"], results["naive"])
               for a, b in zip(rc.logprobs, rn.logprobs)) if both else float("nan")
    preds = {m: [max(range(len(r.logprobs)), key=r.logprobs.__getitem__) for r in results[m]] for m in results}
    acc = {m: sum(p == y for p, y in zip(preds[m], labels)) / len(labels) for m in preds}
    n = len(requests)
    return dict(
        eps={m: n / statistics.median(wall[m]) for m in wall},
        cpu_eps={m: n / statistics.median(cpu[m]) for m in cpu},
        paired=statistics.median(w_n / w_c for w_n, w_c in zip(wall["naive"], wall["cached"])) if both
        else float("nan"), wall=wall, cpu=cpu, diff=diff, acc=acc, same=preds["cached"] == preds["naive"] if both
        else None, rss=rss, stats=stats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test examples to score")
    parser.add_argument("--shots", type=int, default=8, help="demonstrations in the prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path (median reported)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with stsa.binary.{train,test}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbalizers", choices=["single", "multi", "both"], default="single",
                        help="single-token labels, multi-token labels, or both (two lines)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--paths", nargs="+", choices=["cached", "naive"], default=["cached", "naive"],
                        help="scoring paths to run (both: speed-up and agreement)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_scoring.json",
                        help="JSON file with every repeat, the machine, versions and the command")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "src"))
    import torch

    from _hw import matmul_peak, mfu, non_embedding_params

    if args.threads:
        torch.set_num_threads(args.threads)

    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model

    train = read_sst2(args.data / "stsa.binary.train")
    test = read_sst2(args.data / "stsa.binary.test")
    test = random.Random(args.seed + 1).sample(test, min(args.n, len(test)))
    labels = [y for y, _ in test]
    loaded = load_model(args.model, dtype=args.dtype)
    rss_model = peak_rss_mb()
    peak = matmul_peak(args.dtype, threads=torch.get_num_threads())
    n_params = non_embedding_params(loaded.model)

    def factory(prefix_cache: bool) -> HFLM:
        return HFLM.from_loaded(loaded, batch_size=args.batch_size, prefix_cache=prefix_cache)

    print(f"model {loaded.name} ({args.dtype}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {len(test)} SST-2 test examples, "
          f"{args.shots}-shot, batch {args.batch_size}, median of {args.repeats}; "
          f"RSS after loading the model {rss_model:.0f} MB")
    print(f"matmul peak {peak['gflops']:.1f} GFLOP/s ({args.dtype} {peak['size']}x{peak['size']}, "
          f"{peak['threads']} threads); MFU = 2 x {n_params:,} non-embedding params x tokens run / s / peak")
    header = (f"{'labels':<10} {'ctx tok':>7} {'prefix':>6} {'naive ex/s':>10} {'cached ex/s':>11} {'speed-up':>8} "
              f"{'cpu speed-up':>12} {'max |dLL|':>9} {'acc naive':>9} {'acc cached':>10} {'same preds':>10} "
              f"{'tokens naive':>12} {'tokens cached':>13} {'peak RSS MB':>11} {'MFU naive':>9} {'MFU cached':>10}")
    print(header)
    print("-" * len(header))
    kinds = ["single", "multi"] if args.verbalizers == "both" else [args.verbalizers]
    rows = []
    for kind in kinds:
        words = VERBALIZERS[kind]
        requests = build_requests(train, test, shots=args.shots, words=words, seed=args.seed)
        ctx_tok = statistics.mean(loaded_len(loaded, r.context) for r in requests)
        r = run(factory, requests, labels, args.repeats, tuple(args.paths))
        label_tok = "/".join(str(loaded_len(loaded, " " + w)) for w in words)
        nan = float("nan")
        eps = {m: r["eps"].get(m, nan) for m in ("naive", "cached")}
        cpu_eps = {m: r["cpu_eps"].get(m, nan) for m in ("naive", "cached")}
        acc = {m: r["acc"].get(m, nan) for m in ("naive", "cached")}
        tokens = {m: r["stats"][m].computed_tokens if m in r["stats"] else 0 for m in ("naive", "cached")}
        util = {m: mfu(2 * n_params * tokens[m], statistics.median(r["wall"][m]), peak["gflops"])
                if m in r["wall"] else nan for m in ("naive", "cached")}
        prefix = r["stats"]["cached"].prefix_tokens if "cached" in r["stats"] else 0
        print(f"{kind + ' ' + label_tok:<10} {ctx_tok:>7.0f} {prefix:>6} "
              f"{eps['naive']:>10.2f} {eps['cached']:>11.2f} {eps['cached'] / eps['naive']:>7.1f}x "
              f"{cpu_eps['cached'] / cpu_eps['naive']:>11.1f}x {r['diff']:>9.1e} {acc['naive']:>9.3f} "
              f"{acc['cached']:>10.3f} {str(r['same']):>10} {tokens['naive']:>12} "
              f"{tokens['cached']:>13} {max(r['rss'].values()):>11.0f} {util['naive']:>9.1%} {util['cached']:>10.1%}")
        print(f"{'':<10} wall s " + ", ".join(f"{m} {fmt(r['wall'][m])}" for m in r["wall"])
              + f" (median paired speed-up {r['paired']:.1f}x); cpu s "
              + ", ".join(f"{m} {fmt(r['cpu'][m])}" for m in r["cpu"]))
        print(f"{'':<10} " + ", ".join(f"peak RSS after the first {m} run {r['rss'][m]:.0f} MB" for m in r["rss"])
              + f"; load average now {os.getloadavg()[0]:.1f}")
        rows.append({"verbalizers": kind, "context_tokens": ctx_tok, "prefix_tokens": prefix, "wall_s": r["wall"],
                     "cpu_s": r["cpu"], "examples_per_s": r["eps"], "paired_speedup": r["paired"],
                     "tokens_run": tokens, "accuracy": r["acc"], "max_abs_loglik_diff": r["diff"],
                     "same_predictions": r["same"], "peak_rss_mb": r["rss"], "mfu": util,
                     "load_average_after": os.getloadavg()[0]})
    from adaptlab.experiment.store import environment_info

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "bench_scoring", "command": " ".join([sys.executable, *sys.argv]),
                                    "args": {k: str(v) for k, v in vars(args).items()},
                                    "machine": {**environment_info(), "threads": torch.get_num_threads()},
                                    "matmul_peak": peak, "rows": rows}, indent=1, default=str) + "\n",
                        encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def loaded_len(loaded, text: str) -> int:
    return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def fmt(times: list[float]) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in times) + "]"


if __name__ == "__main__":
    raise SystemExit(main())
