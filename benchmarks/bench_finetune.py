"""Benchmark: fine-tuning methods on SST-2: accuracy, training time, throughput, memory and MFU per method.

For every training size (a harness group, ``benchmarks/harness.py``) the methods are the sides: each run is
one ``adaptlab finetune`` in its own process on ``--threads`` threads (the same for every method, so peak
memory is that run's), sides alternated run by run after a warm-up; repeat i trains with seed
``--seed + i`` (the warm-up with ``--seed``). Recorded per run: test accuracy (``--limit`` test examples)
and its interval, training seconds, tokens/second, peak memory, trainable parameters, artifact size and
MFU; summary per (method, size): mean/min/max accuracy over seeds and the medians of the rest.

MFU: model FLOPs per second over this run's peak. FLOPs formulas (per real training token; N = the base
model's non-embedding parameters, ``_hw.non_embedding_params``; attention scores not counted):

* ``full``: 6N (forward 2N, backward 4N: activation and weight gradients);
* ``lora``, ``ia3``, ``prompt_tuning`` (frozen base): 4N (forward 2N, activation gradients 2N; the base
  weights get no gradients, the adapter's own FLOPs are negligible);
* ``embedding_probe``: none (MiniLM embeddings + logistic regression, the LM is not trained).

Tokens/second is the run's real (non-pad) tokens over its training-step seconds. Peak: ``_hw.shape_peak``
at the model's own GEMM shapes with the run's tokens per optimizer step as rows, measured right after
each run in this process on the same ``--threads``. The harness fails the script if an MFU is above 1.

Reproduce the recorded figures (benchmarks/results/bench_finetune.json):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finetune.py --sizes 64 256 1024 --limit 200
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_finetune.py --methods ia3 full --sizes 256
    .venv/bin/python benchmarks/bench_finetune.py --smoke     # seconds: tiny model, lora and full, 2 steps

adaptlab's LoRA training against a plain ``transformers.Trainer`` is ``benchmarks/bench_trainer.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _hw import linear_shapes, mfu, non_embedding_params, shape_peak
from harness import (
    Harness,
    add_harness_arguments,
    command_line,
    run_adaptlab,
    smoke_defaults,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
ALL_METHODS = ["lora", "prompt_tuning", "ia3", "full", "embedding_probe"]
FLOPS_PER_TOKEN = {"full": 6, "lora": 4, "ia3": 4, "prompt_tuning": 4}
"""Training FLOPs per real token in units of N (non-embedding parameters); absent: no MFU."""


def run_method(args: argparse.Namespace, method: str, n: int, seed: int, out: Path) -> dict:
    """One ``adaptlab finetune``: its figures from metrics.json (``error`` when it failed)."""
    cmd = ["finetune", str(args.task), "--model", args.model, "--method", method, "--n-train", str(n),
           "--epochs", str(args.epochs), "--out", str(out), "--seed", str(seed), "--force"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if method != "embedding_probe":
        cmd += ["--set", f"batch_size={args.batch_size}", "--set", f"eval_limit={args.eval_limit}",
                "--set", "save_every=0", "--set", "progress=false"]
        if args.max_steps:
            cmd += ["--set", f"max_steps={args.max_steps}"]
    done = run_adaptlab(cmd, threads=args.threads, in_process=args.smoke)
    row = {"method": method, "n_train": n, "seed": seed, "wall_seconds": done["seconds"]}
    if done["rc"] != 0:
        row["error"] = (done["output"].strip().splitlines() or [f"exit {done['rc']}"])[-1]
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    train = metrics["cost"]["train"]
    row.update({"accuracy": metrics["metric"]["value"],
                "ci": [metrics["metric"]["ci_low"], metrics["metric"]["ci_high"]],
                "train_seconds": train.get("seconds"), "tokens": train.get("tokens"), "steps": train.get("steps"),
                "tokens_per_second": train.get("tokens_per_second"),
                "peak_memory_mb": (train.get("peak_memory_bytes") or 0) / 2**20,
                "trainable_params": train.get("trainable_params"), "train_flops": train.get("flops"),
                "artifact_bytes": train.get("artifact_bytes"),
                "query_flops": metrics["cost"]["query"].get("flops"),
                "latency_p50_s": metrics["cost"]["query"].get("latency_p50_s")})
    return row


def add_mfu(row: dict, shapes: list, n_params: int, args: argparse.Namespace) -> None:
    """``mfu`` = FLOPS_PER_TOKEN[method] x N x tokens/s over the in-run peak at this run's rows per step."""
    factor = FLOPS_PER_TOKEN.get(row["method"])
    if factor is None or not row.get("tokens_per_second") or not row.get("steps"):
        return
    rows = max(1, round(row["tokens"] / row["steps"]))
    peak = shape_peak(shapes, rows, threads=args.threads, repeats=2 if args.smoke else 5)
    row.update(flops_per_token=f"{factor}N", peak_gflops=peak["gflops"], peak_shape=peak["shape"],
               mfu=mfu(factor * n_params * row["tokens"], row["tokens"] / row["tokens_per_second"], peak["gflops"]))


def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(fmt(r.get(c)) for c in cols) for r in rows]
    return "\n".join(lines)


def summarise(method: str, n: int, rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    out = {"method": method, "n_train": n, "runs": len(rows), "failed": len(rows) - len(ok),
           "flops_per_token": f"{FLOPS_PER_TOKEN[method]}N" if method in FLOPS_PER_TOKEN else None}
    if ok:
        acc = [r["accuracy"] for r in ok]
        out.update(accuracy_mean=statistics.fmean(acc), accuracy_min=min(acc), accuracy_max=max(acc),
                   peak_memory_mb=max(r["peak_memory_mb"] for r in ok), trainable_params=ok[-1]["trainable_params"])
        for key in ("train_seconds", "tokens_per_second", "mfu"):
            values = [r[key] for r in ok if r.get(key) is not None]
            out[key] = statistics.median(values) if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=str(REPO / "tasks" / "sst2.yaml"))
    p.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    p.add_argument("--methods", nargs="*", default=None, help=f"subset of {ALL_METHODS} (default: all)")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 256, 1024])
    p.add_argument("--seed", type=int, default=0, help="seed of repeat 0 (repeat i: seed + i)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=200, help="test examples per run")
    p.add_argument("--eval-limit", type=int, default=100, help="dev examples scored at each evaluation")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (default: none)")
    p.add_argument("--threads", type=int, default=1, help="threads of every run (and of the peak)")
    add_harness_arguments(p, "bench_finetune.json")
    ns = p.parse_args(argv)
    smoke_defaults(p, ns, argv, model="tiny-random-llama", methods=["lora", "full"], sizes=[8], epochs=1, batch_size=4,
                   limit=4, eval_limit=4, max_steps=2)
    methods = ns.methods or ALL_METHODS
    h = Harness("bench_finetune", ns, {**vars(ns), "methods": methods})
    h.command = command_line(__file__, argv)

    from adaptlab.models import load_model

    model = load_model(ns.model).model
    n_params, shapes = non_embedding_params(model), linear_shapes(model)
    del model
    print(f"{ns.model}: {n_params:,} non-embedding params; MFU = (6N full | 4N frozen base) x real tokens/s / "
          f"in-run peak at the model's GEMM shapes, {ns.threads} thread(s)", flush=True)
    calls: dict[str, int] = {}

    def side(method: str, n: int, work: Path):
        def run() -> dict:
            k = calls[f"{method}-{n}"] = calls.get(f"{method}-{n}", -1) + 1
            row = run_method(ns, method, n, ns.seed + max(0, k - h.warmup), work / f"{method}-n{n}-{k}")
            add_mfu(row, shapes, n_params, ns)
            return row
        return run

    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in ns.sizes:
            runs = h.alternate(f"n={n}", {m: side(m, n, Path(tmp)) for m in methods})
            table += [summarise(m, n, rows) for m, rows in runs.items()]
    print(_table(table, ["method", "n_train", "runs", "accuracy_mean", "train_seconds", "tokens_per_second",
                         "flops_per_token", "mfu", "peak_memory_mb", "trainable_params", "failed"]))
    h.write({"model": ns.model, "task": ns.task, "non_embedding_params": n_params, "threads": ns.threads,
             "flops_formula": "mfu = FLOPs/token x N x tokens/s / in-run peak; full 6N, lora/ia3/prompt_tuning 4N",
             "methods": table})
    return 1 if any(r["failed"] for r in table) else 0


if __name__ == "__main__":
    raise SystemExit(main())
