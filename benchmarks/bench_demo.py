"""Benchmark: the whole ``adaptlab demo`` command, end to end: wall time and peak memory.

Runs ``python -m adaptlab demo --out TMP --no-progress`` (a fresh temporary run folder each time, so nothing
is resumed) as a subprocess, ``--warmup`` untimed times then ``--repeats`` (>= 3) times through the harness
(``benchmarks/harness.py``; one side, the demo), and records per run its exit code, wall seconds, the peak
RSS of the largest process it started (``ru_maxrss`` of the waited-for children: the largest so far in this
process's life), the peak of the summed RSS of its whole process tree (sampled every ``--interval``
seconds) and the run folder's size; the summary has the median wall seconds and the peak RSS figures over
the timed runs. Extra arguments after ``--`` go to ``adaptlab demo``; threads come from the environment.

Reproduce the recorded figures (benchmarks/results/bench_demo.json; about 6 minutes per run):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_demo.py
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_demo.py -- --limit 100

``--smoke`` (seconds) runs the same command line with ``--help`` appended: the demo on the tiny model takes
about 40 s even with ``--limit`` (it trains a LoRA and three embedding probes on the full demo task), so
the smoke checks the demo accepts the options the benchmark passes, the process sampling and the record.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Harness, add_harness_arguments, command_line, smoke_defaults

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
        return {"exit_code": proc.returncode, "wall_seconds": wall,
                "peak_rss_largest_process_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                "peak_rss_tree_sampled_mb": peak_tree, "run_folder_bytes": _folder_bytes(out),
                "has_db": (out / "adaptlab.db").is_file(), "output_tail": output[-1500:]}


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    argv, extra = (given[:given.index("--")], given[given.index("--") + 1:]) if "--" in given else (given, [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model for the demo (default: the demo's own)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between process-tree RSS samples")
    add_harness_arguments(p, "bench_demo.json")
    ns = p.parse_args(argv)
    smoke_defaults(p, ns, argv, model="tiny-random-llama", interval=0.05)
    h = Harness("bench_demo", ns, {**vars(ns), "demo_args": extra})
    h.command = command_line(__file__, given)
    demo_args = [*(["--model", ns.model] if ns.model else []), *extra, *(["--help"] if ns.smoke else [])]
    print(f"adaptlab demo {' '.join(demo_args)}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    runs = h.alternate("demo", {"demo": lambda: run_demo(demo_args, ns.interval)})["demo"]
    for r in runs:
        if r["exit_code"] != 0:
            print(r["output_tail"], file=sys.stderr)
    ok = [r for r in runs if r["exit_code"] == 0]
    summary = {"demo_args": demo_args, "runs": len(runs), "ok": len(ok),
               "median_wall_seconds": statistics.median(r["wall_seconds"] for r in ok) if ok else None,
               "peak_rss_largest_process_mb": max((r["peak_rss_largest_process_mb"] for r in ok), default=None),
               "peak_rss_tree_sampled_mb": max((r["peak_rss_tree_sampled_mb"] for r in ok), default=None),
               "run_folder_bytes": max((r["run_folder_bytes"] for r in ok), default=None)}
    if ns.smoke:
        summary["smoke"] = "the demo's options were checked (--help appended), not run"
    if ok:
        print(f"median wall {summary['median_wall_seconds']:.1f} s over {len(ok)} run(s); peak RSS "
              f"{summary['peak_rss_largest_process_mb']:.0f} MB (largest process), "
              f"{summary['peak_rss_tree_sampled_mb']:.0f} MB (tree)")
    h.write(summary)
    return 0 if len(ok) == len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
