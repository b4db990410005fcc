"""The GPU code paths, run on a CUDA machine: LoRA fine-tuning through accelerate (fp32 and bf16 autocast) with the
CUDA peak-memory accounting, prompt scoring on the GPU, and the CUDA-only tests of the suite.

Three harness sides (``benchmarks/harness.py``: warm-up, which also builds the CUDA context and kernels, then
``--repeats`` runs, alternated), each one ``adaptlab`` command in its own process on ``--threads`` CPU threads:
**lora no** and **lora bf16** (``adaptlab finetune --method lora --set device=cuda --set mixed_precision=...``)
and **few_shot** (``adaptlab prompt --device cuda``, 8-shot balanced). Recorded per run: exit code, wall
seconds, and from its metrics.json accuracy, training seconds, tokens/second and peak memory (with its kind:
CUDA allocator or RSS), or the query latencies (p50 cold and warm). Summary: the medians per side and the exit
code and tail of the CUDA-only tests (``tests/test_finetune_units.py``, ``test_finetune_train.py``,
``test_lm_hf.py``, run once after the sides).

The real default model cannot travel to an offline GPU machine, so this runs on the tiny random model: it checks
that the paths work and measures their overheads, not model quality. Without a CUDA device it exits 2 with a
message. Reproduce the recorded figures (benchmarks/results/bench_gpu_paths.json) on a CUDA machine:

    python benchmarks/bench_gpu_paths.py --n-train 256
    python benchmarks/bench_gpu_paths.py --smoke    # seconds, any machine: the same commands on the CPU,
                                                    # tiny sizes, in this process, no test run
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

from harness import (
    Harness,
    add_harness_arguments,
    command_line,
    run_adaptlab,
    smoke_defaults,
)

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "src" / "adaptlab" / "demo" / "task.yaml"
CUDA_TESTS = ["tests/test_finetune_units.py", "tests/test_finetune_train.py", "tests/test_lm_hf.py"]


def lora(args: argparse.Namespace, precision: str, work: Path, calls: list[int]):
    def run() -> dict:
        calls[0] += 1
        out = work / f"ft-{precision}-{calls[0]}"
        cmd = ["finetune", str(TASK), "--model", args.model, "--method", "lora", "--n-train", str(args.n_train),
               "--epochs", "1", "--limit", str(args.limit), "--force", "--set", f"device={args.device}",
               "--set", f"mixed_precision={precision}", "--set", "progress=false", "--out", str(out)]
        if args.max_steps:
            cmd += ["--set", f"max_steps={args.max_steps}", "--set", f"eval_limit={args.limit}"]
        done = run_adaptlab(cmd, threads=args.threads, in_process=args.smoke)
        row = {"rc": done["rc"], "wall_seconds": done["seconds"]}
        if done["rc"] != 0:
            return {**row, "log": done["output"]}
        doc = json.loads((out / "metrics.json").read_text())
        train = doc["cost"]["train"]
        return {**row, "accuracy": doc["metric"]["value"], "train_seconds": train["seconds"],
                "tokens_per_second": train.get("tokens_per_second"), "peak_memory_bytes": train["peak_memory_bytes"],
                "peak_memory_kind": train.get("peak_memory_kind")}
    return run


def prompt(args: argparse.Namespace, work: Path, calls: list[int]):
    def run() -> dict:
        calls[0] += 1
        out = work / f"prompt-{calls[0]}"
        cmd = ["prompt", str(TASK), "--model", args.model, "--device", args.device, "--strategy", "few_shot",
               "--shots", str(args.shots), "--selection", "balanced", "--force", "--out", str(out)]
        if args.prompt_limit:
            cmd += ["--limit", str(args.prompt_limit)]
        done = run_adaptlab(cmd, threads=args.threads, in_process=args.smoke)
        row = {"rc": done["rc"], "wall_seconds": done["seconds"]}
        if done["rc"] != 0:
            return {**row, "log": done["output"]}
        q = json.loads((out / "metrics.json").read_text())["cost"]["query"]
        return {**row, "latency_s": q["latency_s"], "latency_p50_s": q["latency_p50_s"],
                "latency_p50_warm_s": q["latency_p50_warm_s"]}
    return run


def median_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-random-llama", help="adaptlab model name or folder")
    p.add_argument("--device", default="cuda", help="cuda (the point); --smoke runs on cpu")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--limit", type=int, default=100, help="test examples of each fine-tune")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (default: none)")
    p.add_argument("--shots", type=int, default=8)
    p.add_argument("--prompt-limit", type=int, default=None, help="test examples of the prompt run (default: all)")
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each run")
    p.add_argument("--tests", action=argparse.BooleanOptionalAction, default=True, help="run the CUDA tests after")
    add_harness_arguments(p, "bench_gpu_paths.json")
    args = p.parse_args(argv)
    smoke_defaults(p, args, argv, device="cpu", n_train=8, limit=4, max_steps=2, shots=2, prompt_limit=4,
                   tests=False)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_paths: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or with --smoke to run its code paths on the CPU", file=sys.stderr)
        return 2
    h = Harness("bench_gpu_paths", args)
    h.command = command_line(__file__, argv)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sides = {f"lora {pr}": lora(args, pr, work, [0]) for pr in args.precisions}
        sides[f"few_shot k={args.shots}"] = prompt(args, work, [0])
        runs = h.alternate(args.device, sides)
    for name, rows in runs.items():
        for r in rows:
            print(json.dumps({"side": name, **{k: v for k, v in r.items() if k != "log"}}), flush=True)
    summary: dict = {"device": args.device, "gpu": gpu, "cuda": torch.version.cuda, "sides": {}}
    for name, rows in runs.items():
        keys = ("wall_seconds", "train_seconds", "tokens_per_second", "peak_memory_bytes", "latency_s",
                "latency_p50_s", "latency_p50_warm_s")
        summary["sides"][name] = {"runs": len(rows), "failed": sum(r["rc"] != 0 for r in rows),
                                  **{k: median_of(rows, k) for k in keys if any(k in r for r in rows)},
                                  "peak_memory_kind": next((r["peak_memory_kind"] for r in rows
                                                            if r.get("peak_memory_kind")), None)}
    if args.tests:
        path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *CUDA_TESTS,
                                "-m", "not integration"], check=False, capture_output=True, text=True, cwd=REPO,
                               env=env)
        summary["tests"] = {"rc": tests.returncode, "tail": tests.stdout[-1500:]}
        print(tests.stdout[-1500:])
    h.write(summary)
    failed = any(s["failed"] for s in summary["sides"].values()) or summary.get("tests", {}).get("rc", 0) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
