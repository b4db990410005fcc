"""Benchmark: the whole ``adaptlab demo`` command, end to end: wall time and peak memory.

Runs ``python -m adaptlab demo --out TMP --no-progress`` (a fresh temporary run folder each time, so nothing
is resumed) as a subprocess and reports its wall seconds, the peak RSS of the largest process in its tree
(``ru_maxrss`` of the waited-for children) and, sampled every ``--interval`` seconds, the peak of the
summed RSS of the whole process tree. Extra arguments after ``--`` go to ``adaptlab demo``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_demo.py
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_demo.py --repeats 2 -- --limit 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_rss_mb(pid: int) -> float:
    """Summed RSS (MB) of ``pid`` and its descendants now; 0 when psutil is missing or the process is gone."""
    try:
        import psutil
    except ImportError:
        return 0.0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_demo(extra: list[str], interval: float) -> dict:
    """One ``adaptlab demo`` run in a fresh folder: exit code, wall seconds, peak RSS figures."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "adaptlab", "demo", "--out", str(out), "--no-progress", *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak_tree = 0.0
        while proc.poll() is None:
            peak_tree = max(peak_tree, tree_rss_mb(proc.pid))
            time.sleep(interval)
        output = proc.stdout.read() if proc.stdout else ""
        wall = time.perf_counter() - start
        db = out / "adaptlab.db"
        return {"exit_code": proc.returncode, "wall_seconds": wall,
                "peak_rss_largest_process_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "peak_rss_tree_sampled_mb": peak_tree, "run_folder_bytes": _folder_bytes(out),
                "has_db": db.is_file(), "output_tail": output[-1500:]}


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1, help="demo runs (median wall time reported)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between process-tree RSS samples")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_demo.json")
    ns = p.parse_args(argv)
    print(f"adaptlab demo {' '.join(extra)}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    runs = []
    for i in range(ns.repeats):
        r = run_demo(extra, ns.interval)
        runs.append(r)
        print(f"run {i + 1}: exit {r['exit_code']}, {r['wall_seconds']:.1f} s wall, peak RSS largest process "
              f"{r['peak_rss_largest_process_mb']:.0f} MB, process tree (sampled) "
              f"{r['peak_rss_tree_sampled_mb']:.0f} MB, run folder {r['run_folder_bytes'] / 2**20:.1f} MB; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        if r["exit_code"] != 0:
            print(r["output_tail"], file=sys.stderr)
    ok = [r for r in runs if r["exit_code"] == 0]
    if ok:
        print(f"median wall {statistics.median(r['wall_seconds'] for r in ok):.1f} s over {len(ok)} run(s); "
              f"peak RSS {max(r['peak_rss_largest_process_mb'] for r in ok):.0f} MB (largest process), "
              f"{max(r['peak_rss_tree_sampled_mb'] for r in ok):.0f} MB (tree)")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"args": extra, "runs": runs}, indent=2), encoding="utf-8")
    return 0 if len(ok) == len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
