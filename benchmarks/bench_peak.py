"""Benchmark: this machine's matmul peak, the denominator of the MFU figures (``_hw.py``).

Two harness sides per dtype (``benchmarks/harness.py``: warm-up, ``--repeats`` runs, alternated), both in
this process on ``--threads`` threads:

* **matmul**: ``_hw.matmul_peak``, the faster of ``torch.matmul`` and ``F.linear`` on square
  ``--size`` matrices (median of 5 calls after one);
* **shapes@R**: ``_hw.shape_peak`` at the model's own GEMM shapes (``_hw.linear_shapes`` of ``--model``,
  the default model unless given: every distinct ``nn.Linear`` but the output layer) with R rows
  (``--rows``: tokens per forward; scoring batches run thousands, training batches hundreds), the fastest
  shape's median of 5 calls. This is the peak the scripts divide by (measured again inside each of them).

Records every run's GFLOP/s (and per-shape figures), and per dtype the median over the runs of each
side, the fastest shape and the CPU's bfloat16 matmul features. float32 only unless ``--dtypes``.

Reproduce the recorded figures (benchmarks/results/bench_peak.json):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_peak.py --threads 2
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_peak.py --threads 2 --dtypes float32 bfloat16
    .venv/bin/python benchmarks/bench_peak.py --smoke        # seconds: tiny model, 128x128, 16 rows
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _hw import bf16_hardware, linear_shapes, matmul_peak, shape_peak
from harness import Harness, add_harness_arguments, command_line, smoke_defaults

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32"])
    ap.add_argument("--size", type=int, default=None, help="square size (default 2048 float32, 1024 bfloat16)")
    ap.add_argument("--rows", type=int, nargs="+", default=[512, 4096], help="GEMM rows of the shape peaks")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model whose GEMM shapes are measured")
    add_harness_arguments(ap, "bench_peak.json")
    args = ap.parse_args(argv)
    smoke_defaults(ap, args, argv, size=128, rows=[16], model="tiny-random-llama")
    h = Harness("bench_peak", args)
    h.command = command_line(__file__, argv)

    import torch

    from adaptlab.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    shapes = linear_shapes(load_model(args.model).model)
    print(f"bfloat16 matmul hardware: {', '.join(bf16_hardware()) or 'none (emulated, slow)'}; {threads} threads; "
          f"{args.model} GEMM shapes (in, out): {shapes}")
    summary: dict = {"model": args.model, "threads": threads, "shapes": shapes, "bf16_hardware": bf16_hardware(),
                     "dtypes": {}}
    for dtype in args.dtypes:
        sides = {"matmul": lambda d=dtype: matmul_peak(d, size=args.size, threads=threads)}
        for rows in args.rows:
            sides[f"shapes@{rows}"] = lambda d=dtype, r=rows: shape_peak(shapes, r, dtype=d, threads=threads)
        runs = h.alternate(dtype, sides)
        out = {name: {"gflops": statistics.median(r["gflops"] for r in rs)} for name, rs in runs.items()}
        out["matmul"].update(size=runs["matmul"][-1]["size"], op=runs["matmul"][-1]["op"])
        for rows in args.rows:
            per = runs[f"shapes@{rows}"]
            per_shape = {k: statistics.median(r["per_shape"][k] for r in per) for k in per[-1]["per_shape"]}
            out[f"shapes@{rows}"].update(rows=rows, per_shape=per_shape, shape=max(per_shape, key=per_shape.get))
        summary["dtypes"][dtype] = out
        for name, o in out.items():
            what = f"{o['size']}x{o['size']} ({o['op']})" if name == "matmul" else f"fastest {o['shape']}"
            print(f"{dtype:<9} {name:<13} {o['gflops']:8.1f} GFLOP/s  {what}, median of {len(runs[name])} run(s)")
    h.write(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
