"""The benchmark harness every script in ``benchmarks/`` uses.

Each side of a comparison runs ``--warmup`` untimed times, then ``--repeats`` (at least 3) timed times,
sides alternated (A B, B A, A B, ...), so load drift hits both alike. Every repeat is kept. The JSON
written to ``benchmarks/results/`` holds the benchmark's name, the exact command, the machine (CPU model,
cores, RAM, library versions), the load average before and after, the settings, every run (warm-ups
marked) and the summary. MFU values above 1 are impossible: :func:`check_mfu` fails the script before
anything is written.

    from harness import Harness, add_harness_arguments, command_line, smoke_defaults
    args = parser.parse_args(argv)          # a parser with add_harness_arguments
    smoke_defaults(parser, args, argv, model="tiny-random-llama", n=4)   # --smoke: tiny unless given
    h = Harness("bench_x", args)
    h.command = command_line(__file__, argv)   # the exact command, also when main(argv) is called by a test
    runs = h.alternate("8-shot", {"adaptlab": run_a, "peer": run_b})
    h.write({"speedup": ...})

:func:`run_adaptlab` runs an ``adaptlab`` command as a side's subprocess (in-process under ``--smoke``).
Scripts that only summarise finished runs (nothing timed) write the same record, without runs, through
:func:`write_record`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MIN_REPEATS = 3


class MFUError(RuntimeError):
    """A model-FLOPs utilisation above 1: the FLOPs formula or the peak is wrong."""


def add_harness_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--repeats``, ``--warmup``, ``--out`` and ``--smoke`` (tiny sizes, repeats allowed below 3)."""
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help="timed runs per side (>= 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per side before the repeats")
    parser.add_argument("--out", type=Path, default=RESULTS / default_out, help="JSON file written")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long check that the script runs (tiny model/sizes; allows < 3 repeats)")


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and library versions (no host or user names)."""
    sys.path.insert(0, str(REPO / "src"))
    from adaptlab.experiment.store import environment_info

    info = environment_info()
    from importlib import metadata

    for name in ("lm_eval", "llama_cpp_python", "accelerate"):
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    info["env_threads"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return info


def check_mfu(doc: Any, where: str = "") -> None:
    """Raise :class:`MFUError` when any ``mfu*`` value in ``doc`` (nested) is above 1."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if str(key).startswith("mfu") and isinstance(value, (int, float)) and value > 1:
                raise MFUError(f"{where}{key} = {value:.3f} > 1: the FLOPs count or the peak is wrong")
            check_mfu(value, f"{where}{key}.")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            check_mfu(value, f"{where}{i}.")


def median(rows: list[dict[str, Any]], key: str) -> float:
    """Median of ``key`` over timed (non-warm-up) rows."""
    values = [r[key] for r in rows if not r.get("warmup") and r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a side's subprocess: ``threads`` intra-op threads, offline hubs, ``src`` importable."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "benchmarks")]),
                OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
                HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def command_line(script: str | Path, argv: list[str] | None = None) -> str:
    """The exact command of this run: thread variables set, the interpreter, the script (relative to the repo
    root, where it is run from) and its arguments (``sys.argv[1:]`` when ``argv`` is None, e.g. from a test)."""
    script = Path(script).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ]
    return shlex.join([*env, sys.executable, str(shown), *(sys.argv[1:] if argv is None else argv)])


def smoke_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
                   **values: Any) -> None:
    """Under ``--smoke``, set each option in ``values`` (tiny sizes/model) that ``argv`` (``sys.argv[1:]`` when
    None) does not give."""
    if not args.smoke:
        return
    argv = sys.argv[1:] if argv is None else argv
    for key, value in values.items():
        action = next(a for a in parser._actions if a.dest == key)
        if not any(arg == opt or arg.startswith(opt + "=") for arg in argv for opt in action.option_strings):
            setattr(args, key, value)


def run_adaptlab(args: list[str], *, threads: int = 1, in_process: bool = False) -> dict[str, Any]:
    """Run ``adaptlab ARGS``: ``rc``, ``seconds`` and the ``output`` tail. A subprocess on ``threads`` threads
    (:func:`thread_env`) by default, so each run's peak memory is its own; ``in_process`` (for ``--smoke``)
    runs the same command line in this process with torch on ``threads``, skipping the interpreter and
    torch start-up (seconds per run) but not the command's own code."""
    import subprocess

    start = time.perf_counter()
    if not in_process:
        proc = subprocess.run([sys.executable, "-m", "adaptlab", *args], check=False, env=thread_env(threads), cwd=REPO,
                              capture_output=True, text=True)
        return {"rc": proc.returncode, "seconds": time.perf_counter() - start,
                "output": (proc.stdout + proc.stderr)[-3000:]}
    import torch

    sys.path.insert(0, str(REPO / "src"))
    from adaptlab.cli import app

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rc, output = app(args=list(args), standalone_mode=False) or 0, ""
    except SystemExit as exc:
        rc, output = exc.code if isinstance(exc.code, int) else 1, str(exc.code or "")
    except Exception as exc:  # noqa: BLE001 - recorded as a failed run, like a subprocess's exit code
        rc, output = 1, f"{type(exc).__name__}: {exc}"
    finally:
        torch.set_num_threads(old)
    return {"rc": rc, "seconds": time.perf_counter() - start, "output": output[-3000:]}


def _dump(doc: dict[str, Any], out: Path) -> Path:
    """Check MFU, then write ``doc`` to ``out`` atomically."""
    check_mfu(doc)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")
    return out


def write_record(benchmark: str, out: str | Path, summary: Any, settings: dict[str, Any], *,
                 command: str | None = None, load_before: tuple[float, ...] | None = None) -> Path:
    """The harness record of a benchmark with no timed sides (a summary of finished runs): name, command, machine,
    settings, load average before (``load_before``, default now) and after, and the summary; ``runs`` empty."""
    doc = {"benchmark": benchmark, "command": command or " ".join([sys.executable, *sys.argv]),
           "machine": machine(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()},
           "repeats": None, "warmup": None, "load_average_before": load_before or os.getloadavg(),
           "load_average_after": os.getloadavg(), "summary": summary, "runs": []}
    return _dump(doc, Path(out))


class Harness:
    """Runs sides alternated with warm-ups, keeps every repeat, writes the record."""

    def __init__(self, benchmark: str, args: argparse.Namespace, settings: dict[str, Any] | None = None):
        if args.repeats < MIN_REPEATS and not args.smoke:
            raise SystemExit(f"{benchmark}: --repeats {args.repeats} < {MIN_REPEATS} (only --smoke may use fewer)")
        self.benchmark = benchmark
        self.repeats, self.warmup, self.out = args.repeats, args.warmup, Path(args.out)
        self.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in (settings or vars(args)).items()}
        self.load_before = os.getloadavg()
        self.started = time.time()
        self.runs: list[dict[str, Any]] = []
        self.command = " ".join([sys.executable, *sys.argv])
        """Recorded as the exact command; scripts set it with :func:`command_line` (right under a test too)."""

    def alternate(self, group: str, sides: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, list[dict]]:
        """Warm-ups, then repeats with the side order flipped every repeat; returns timed rows per side."""
        names = list(sides)
        out: dict[str, list[dict]] = {n: [] for n in names}
        plan = [(True, i) for i in range(self.warmup)] + [(False, i) for i in range(self.repeats)]
        for warm, i in plan:
            for name in (names if i % 2 == 0 else names[::-1]):
                load = os.getloadavg()[0]
                start = time.perf_counter()
                row = dict(sides[name]())
                row.setdefault("wall_seconds", time.perf_counter() - start)
                row.update(group=group, side=name, repeat=i, warmup=warm, load_average_1m=round(load, 2))
                self.runs.append(row)
                if not warm:
                    out[name].append(row)
                log(f"  {group} {name:<12} {'warm-up' if warm else f'run {i + 1}'}: "
                    f"{row['wall_seconds']:.2f} s (load {load:.1f})")
        return out

    def record(self, group: str, side: str, row: dict[str, Any]) -> dict[str, Any]:
        """Keep a run made outside :meth:`alternate` (e.g. a configuration that does not vary, run once)."""
        row = {**row, "group": group, "side": side, "repeat": row.get("repeat", 0), "warmup": False,
               "load_average_1m": round(os.getloadavg()[0], 2)}
        self.runs.append(row)
        return row

    def write(self, summary: dict[str, Any]) -> Path:
        """Check MFU, then write the record atomically; returns its path."""
        doc = {"benchmark": self.benchmark, "command": self.command,
               "machine": machine(), "settings": self.settings, "repeats": self.repeats, "warmup": self.warmup,
               "load_average_before": self.load_before, "load_average_after": os.getloadavg(),
               "seconds": round(time.time() - self.started, 1), "summary": summary, "runs": self.runs}
        return _dump(doc, self.out)
