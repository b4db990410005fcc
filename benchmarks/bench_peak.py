"""Benchmark: this machine's matmul peak (float32 and bfloat16), the denominator of the MFU figures.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_peak.py --threads 2
"""

from __future__ import annotations

from _hw import main

if __name__ == "__main__":
    raise SystemExit(main())
