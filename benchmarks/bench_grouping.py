"""Benchmark: does length-grouped batching (`TrainArgs.group_by_length`, on by default) cost quality on
small training sets? LoRA on SST-2 with grouping on and off, over seeds, side by side.

Two harness sides (``benchmarks/harness.py``), **grouped** and **random** (``group_by_length=false``): each
run is one ``adaptlab finetune`` (the real CLI, its own subprocess on ``--threads`` threads, the same for
both sides), sides alternated run by run after a warm-up. Repeat i trains with seed ``--seed + i`` on both
sides (the warm-up with ``--seed``), so repeats are paired by seed. Recorded per run: test accuracy, best
and final dev loss, training seconds and tokens/second; summary per side: mean accuracy and best dev
loss, median tokens/second, and the paired (same seed) differences grouped - random.

Reproduce the recorded figures (benchmarks/results/bench_grouping.json):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grouping.py --n-train 128 --epochs 2 --repeats 3
    .venv/bin/python benchmarks/bench_grouping.py --smoke   # seconds: tiny model, 2 steps, in this process
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from harness import (
    Harness,
    add_harness_arguments,
    command_line,
    run_adaptlab,
    smoke_defaults,
)

REPO = Path(__file__).resolve().parents[1]


def finetune(args: argparse.Namespace, seed: int, grouped: bool, out: Path) -> dict:
    """One fine-tune + evaluation; the figures from its metrics.json and train_log.jsonl."""
    cmd = ["finetune", str(args.task), "--model", args.model, "--method", "lora", "--n-train", str(args.n_train),
           "--epochs", str(args.epochs), "--seed", str(seed), "--limit", str(args.limit), "--force",
           "--set", f"group_by_length={'true' if grouped else 'false'}", "--set", f"eval_limit={args.eval_limit}",
           "--set", "progress=false", "--set", "save_every=0", "--out", str(out)]
    if args.max_steps:
        cmd += ["--set", f"max_steps={args.max_steps}"]
    done = run_adaptlab(cmd, threads=args.threads, in_process=args.smoke)
    if done["rc"] != 0:
        raise RuntimeError(f"adaptlab finetune failed (exit {done['rc']}): {done['output']}")
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in log if r.get("eval")]
    train = metrics["cost"]["train"]
    return {"grouped": grouped, "seed": seed, "wall_seconds": done["seconds"], "accuracy": metrics["metric"]["value"],
            "best_dev_loss": min(r["dev_loss"] for r in evals), "final_dev_loss": evals[-1]["dev_loss"],
            "tokens_per_second": train.get("tokens_per_second"), "train_seconds": train.get("seconds")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", type=Path, default=REPO / "tasks" / "sst2.yaml")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of repeat 0 (repeat i: seed + i)")
    ap.add_argument("--limit", type=int, default=200, help="test examples (seeded sample)")
    ap.add_argument("--eval-limit", type=int, default=100, help="dev examples scored at each evaluation")
    ap.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (default: none)")
    ap.add_argument("--threads", type=int, default=1, help="threads of each run (both sides)")
    add_harness_arguments(ap, "bench_grouping.json")
    args = ap.parse_args(argv)
    smoke_defaults(ap, args, argv, model="tiny-random-llama", n_train=8, epochs=1, limit=4, eval_limit=4, max_steps=2)
    h = Harness("bench_grouping", args)
    h.command = command_line(__file__, argv)
    calls = {"grouped": 0, "random": 0}

    def side(name: str, tmp: Path):
        def run() -> dict:
            k = calls[name]
            calls[name] += 1
            seed = args.seed + max(0, k - h.warmup)
            return finetune(args, seed, name == "grouped", tmp / f"{name}-{k}")
        return run

    with tempfile.TemporaryDirectory() as tmp:
        runs = h.alternate("lora", {name: side(name, Path(tmp)) for name in calls})
    summary: dict = {"sides": {}}
    for name, rows in runs.items():
        summary["sides"][name] = {
            "runs": len(rows), "accuracy_mean": statistics.fmean(r["accuracy"] for r in rows),
            "best_dev_loss_mean": statistics.fmean(r["best_dev_loss"] for r in rows),
            "tokens_per_second_median": statistics.median(r["tokens_per_second"] for r in rows),
            "train_seconds_median": statistics.median(r["train_seconds"] for r in rows)}
        s = summary["sides"][name]
        print(f"{name}: accuracy {s['accuracy_mean']:.3f}, best dev loss {s['best_dev_loss_mean']:.3f}, "
              f"tok/s {s['tokens_per_second_median']:.1f}")
    pairs = list(zip(runs["grouped"], runs["random"]))
    summary["paired"] = [{"seed": a["seed"], "accuracy_diff": a["accuracy"] - b["accuracy"],
                          "best_dev_loss_diff": a["best_dev_loss"] - b["best_dev_loss"]} for a, b in pairs]
    summary["accuracy_diff_mean"] = statistics.fmean(p["accuracy_diff"] for p in summary["paired"])
    print("paired (grouped - random), per seed: accuracy "
          + ", ".join(f"{p['accuracy_diff']:+.3f}" for p in summary["paired"]) + "; best dev loss "
          + ", ".join(f"{p['best_dev_loss_diff']:+.3f}" for p in summary["paired"]))
    h.write(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
