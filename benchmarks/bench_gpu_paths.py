"""The GPU code paths, run on a CUDA machine: LoRA fine-tuning through accelerate (fp32 and bf16 autocast) with the
CUDA peak-memory accounting, prompt scoring on the GPU, and the CUDA-only tests of the suite.

    python benchmarks/bench_gpu_paths.py [--out DIR] [--n-train 256]

The real default model cannot travel to an offline GPU machine, so this runs on the tiny random model: it checks
that the paths work and measures their overheads, not model quality. Writes DIR/bench_gpu_paths.json (default
benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "src" / "adaptlab" / "demo" / "task.yaml"


def adaptlab(*args: str) -> tuple[int, float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "160",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "adaptlab", *args], capture_output=True, text=True, env=env)
    return out.returncode, time.perf_counter() - t0, (out.stdout + out.stderr)[-3000:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    record: dict = {"command": " ".join(sys.argv), "machine": {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count()}, "runs": []}
    if not torch.cuda.is_available():
        record["skipped"] = "no CUDA device"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_paths"
    for repeat in range(args.repeats + 1):  # the first is a warm-up (CUDA context, kernels)
        for precision in ("no", "bf16"):
            out = work / f"ft-{precision}-{repeat}"
            rc, seconds, log = adaptlab("finetune", str(TASK), "--model", "tiny-random-llama", "--method", "lora",
                                        "--n-train", str(args.n_train), "--epochs", "1", "--limit", "100", "--force",
                                        "--set", "device=cuda", "--set", f"mixed_precision={precision}",
                                        "--set", "progress=false", "--out", str(out))
            run = {"what": f"lora {precision}", "repeat": repeat, "warmup": repeat == 0, "rc": rc,
                   "wall_s": seconds}
            if rc == 0:
                doc = json.loads((out / "metrics.json").read_text())
                train = doc["cost"]["train"]
                run.update(accuracy=doc["metric"]["value"], train_seconds=train["seconds"],
                           tokens_per_second=train.get("tokens_per_second"), peak_memory_bytes=train["peak_memory_bytes"],
                           peak_memory_kind=train.get("peak_memory_kind"))
            else:
                run["log"] = log
            record["runs"].append(run)
            print(json.dumps(run), flush=True)
        out = work / f"prompt-{repeat}"
        rc, seconds, log = adaptlab("prompt", str(TASK), "--model", "tiny-random-llama", "--device", "cuda",
                                    "--strategy", "few_shot", "--shots", "8", "--selection", "balanced", "--force",
                                    "--out", str(out))
        run = {"what": "few_shot k=8 on cuda", "repeat": repeat, "warmup": repeat == 0, "rc": rc, "wall_s": seconds}
        if rc == 0:
            q = json.loads((out / "metrics.json").read_text())["cost"]["query"]
            run.update(latency_s=q["latency_s"], latency_p50_s=q["latency_p50_s"],
                       latency_p50_warm_s=q["latency_p50_warm_s"])
        else:
            run["log"] = log
        record["runs"].append(run)
        print(json.dumps(run), flush=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            "tests/test_finetune_units.py", "tests/test_finetune_train.py", "tests/test_lm_hf.py",
                            "-m", "not integration"], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + str(REPO / "tests")
                                + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"})
    record["tests"] = {"rc": tests.returncode, "tail": tests.stdout[-1500:]}
    print(tests.stdout[-1500:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu_paths.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
