"""Benchmark: does length-grouped batching (`TrainArgs.group_by_length`, on by default) cost quality on
small training sets? LoRA on SST-2 with grouping on and off, over seeds, side by side.

Runs ``adaptlab finetune`` (the real CLI, one subprocess per run, alternating on/off so load drift hits
both alike) and prints test accuracy, best dev loss, final dev loss, padding and tokens/second for each
run, then the per-setting mean and the paired (same seed) differences.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_grouping.py --n-train 128 --epochs 2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(n_train: int, epochs: int, seed: int, grouped: bool, limit: int, out: Path) -> dict:
    """One fine-tune + evaluation; the figures from its metrics.json and train_log.jsonl."""
    cmd = [sys.executable, "-m", "adaptlab", "finetune", str(REPO / "tasks" / "sst2.yaml"), "--method", "lora",
           "--n-train", str(n_train), "--epochs", str(epochs), "--seed", str(seed), "--limit", str(limit),
           "--set", f"group_by_length={'true' if grouped else 'false'}", "--set", "eval_limit=100",
           "--set", "progress=false", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in log if r.get("eval")]
    train = metrics["cost"]["train"]
    return {"grouped": grouped, "seed": seed, "accuracy": metrics["metric"]["value"],
            "best_dev_loss": min(r["dev_loss"] for r in evals), "final_dev_loss": evals[-1]["dev_loss"],
            "tokens_per_second": train.get("tokens_per_second"), "seconds": train.get("seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--limit", type=int, default=200, help="test examples (seeded sample)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    print("grouped seed accuracy best_dev_loss final_dev_loss tok/s train_s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for grouped in (True, False):
                r = run(args.n_train, args.epochs, seed, grouped, args.limit, Path(tmp) / f"{grouped}-{seed}")
                rows.append(r)
                print(f"{str(grouped):7} {seed:4d} {r['accuracy']:8.3f} {r['best_dev_loss']:13.3f} "
                      f"{r['final_dev_loss']:14.3f} {r['tokens_per_second']:5.1f} {r['seconds']:7.0f}", flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows},
                                                    indent=2))
    for grouped in (True, False):
        sel = [r for r in rows if r["grouped"] == grouped]
        print(f"grouped={grouped}: accuracy {statistics.fmean(r['accuracy'] for r in sel):.3f}, best dev loss "
              f"{statistics.fmean(r['best_dev_loss'] for r in sel):.3f}, tok/s "
              f"{statistics.fmean(r['tokens_per_second'] for r in sel):.1f}")
    diffs = [a["accuracy"] - b["accuracy"] for a, b in zip(rows[::2], rows[1::2])]
    loss = [a["best_dev_loss"] - b["best_dev_loss"] for a, b in zip(rows[::2], rows[1::2])]
    print(f"paired (grouped - random), per seed: accuracy {', '.join(f'{d:+.3f}' for d in diffs)}; "
          f"best dev loss {', '.join(f'{d:+.3f}' for d in loss)}")


if __name__ == "__main__":
    main()
