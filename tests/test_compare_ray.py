"""`adaptlab compare --executor ray`: a local Ray cluster of two workers runs the grid's cells in parallel.

One module fixture drives real ``python -m adaptlab`` runs on the tiny model: a Ray run stopped with
SIGTERM while its first cells are in flight, then resumed on Ray to the end; beside it (in this
process) the same experiment with the default local executor. Every cell must be in the store once,
equal (values and per-example predictions) to the local run, and the resumed run must have used two
worker processes. The config tests need no cluster.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_compare import _cmd, _env, _experiment
from test_finetune_toy import one_thread_torch

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'adaptlab[ray]')")

EXPERIMENT = """\
name: toy-ray
task: task/task.yaml
model: tiny-random-llama
train_sizes: [8, 16]
seeds: [0, 1]
limit: 10
epochs: 1
strategies:
  - zero_shot
  - name: few_shot
    options: {k: 2, selection: balanced}
  - name: embedding_probe
    seeds: [0]
  - name: lora
    label: lora
    train_sizes: [16]
    seeds: [0]
    options: {max_steps: 3, batch_size: 8, eval_limit: 4, rank: 4}
  - name: embedding_probe
    label: broken
    seeds: [0]
    train_sizes: [8]
    options: {embedder: no-such-embedder}
scenario: {queries_per_month: 1000, price_per_hour: 1.0}
"""
N_CELLS = 1 + 2 + 2 + 1 + 1
N_DONE = N_CELLS - 1  # the "broken" cell fails (unknown embedder), the same way on either executor
RAY_FLAGS = ("--executor", "ray", "--workers", "2")


def _ray_processes() -> set[int]:
    """Pids of live Ray processes (raylet, GCS, workers) on this machine."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            text = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and ("ray::" in text or f"{os.sep}ray{os.sep}" in text):
                found.add(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _store_rows(run_dir: Path) -> tuple[list[str], int]:
    """Every cell key row in the database (duplicates kept) and the number of prediction rows."""
    conn = sqlite3.connect(f"{(run_dir / 'adaptlab.db').resolve().as_uri()}?mode=ro", uri=True)
    try:
        keys = [r[0] for r in conn.execute("SELECT key FROM cells")]
        return keys, conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
    finally:
        conn.close()


def _results(run_dir: Path) -> dict[str, tuple]:
    """Per cell: status, error, value, CI, n_test and every prediction (NaN as None, so failed cells compare)."""
    import math

    from adaptlab.experiment.store import RunStore

    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    with RunStore(run_dir, create=False) as store:
        return {rec.key: (rec.status, rec.error, num(rec.value), num(rec.ci_low), num(rec.ci_high), rec.n_test,
                          [(p.example_id, p.pred, p.score) for p in store.predictions(rec.key)])
                for rec in store.cells()}


def _extras(run_dir: Path) -> dict[str, dict]:
    from adaptlab.experiment.store import RunStore

    with RunStore(run_dir, create=False) as store:
        return {rec.key: rec.extra for rec in store.cells()}


def _local_run(exp: Path, run_dir: Path) -> tuple:
    """The reference: the default local executor, in this process (torch on one thread, like the workers)."""
    from adaptlab.experiment import load_experiment, run_experiment

    gen = one_thread_torch()
    next(gen)
    try:
        cfg = load_experiment(exp)
        return cfg, run_experiment(cfg, run_dir, progress=False)
    finally:
        next(gen, None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The local reference run (in a thread, beside the rest); a Ray run stopped with SIGTERM once a
    worker has started a cell; the same run resumed on Ray to the end."""
    root = tmp_path_factory.mktemp("compare_ray")
    exp = _experiment(root, EXPERIMENT)
    ray_dir, local_dir = root / "ray", root / "local"
    before = _ray_processes()
    procs: list[subprocess.Popen] = []
    with ThreadPoolExecutor(1) as pool:
        local = pool.submit(_local_run, exp, local_dir)
        try:
            first = subprocess.Popen(_cmd(exp, ray_dir, *RAY_FLAGS), env=_env(), cwd=root, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            procs.append(first)
            cells = ray_dir / "cells"
            deadline = time.monotonic() + 120
            while (time.monotonic() < deadline and first.poll() is None
                   and not (cells.is_dir() and any(cells.iterdir()))):
                time.sleep(0.05)
            assert first.poll() is None, "the Ray run ended before a cell started: " + first.stderr.read()[-3000:]
            first.send_signal(signal.SIGTERM)
            _, first_err = first.communicate(timeout=60)
            stopped = _results(ray_dir)
            leaked = _ray_processes() - before
            deadline = time.monotonic() + 15  # the kernel may take a moment to reap them
            while leaked and time.monotonic() < deadline:
                time.sleep(0.2)
                leaked = _ray_processes() - before
            resumed = subprocess.Popen(_cmd(exp, ray_dir, "--resume", *RAY_FLAGS), env=_env(), cwd=root,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(resumed)
            out, err = resumed.communicate(timeout=400)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        cfg, records = local.result(timeout=400)
    return SimpleNamespace(exp=exp, cfg=cfg, ray_dir=ray_dir, local_dir=local_dir, local=records,
                           first=(first.returncode, first_err, stopped, leaked),
                           resumed=(resumed.returncode, out, err, resumed.pid))


@needs_ray
def test_ray_run_stores_every_cell_once_equal_to_a_local_run(runs: SimpleNamespace) -> None:
    rc, out, err, _ = runs.resumed
    assert rc == 3, err[-3000:]  # finished, with one failed cell
    assert "Traceback" not in err and f"1 of {N_CELLS} cells failed" in " ".join(err.split())
    from adaptlab.experiment.runner import prepare

    planned = {c.key for c in prepare(runs.cfg)[1]}
    keys, n_predictions = _store_rows(runs.ray_dir)
    assert len(keys) == len(set(keys)) == N_CELLS and set(keys) == planned
    assert n_predictions == N_DONE * 10
    ray_results, local_results = _results(runs.ray_dir), _results(runs.local_dir)
    assert set(local_results) == planned
    assert sorted(r.status for r in runs.local) == ["done"] * N_DONE + ["failed"]
    for key, local in local_results.items():
        assert ray_results[key] == local, key  # status, error, value, CI, n_test and every prediction
    failed = [r for r in ray_results.values() if r[0] == "failed"]
    assert len(failed) == 1 and "no-such-embedder" in failed[0][1] and failed[0][6] == []
    # every done cell's artifact folder, written by its worker; no folder of the failed or stopped cells
    done = {k for k, r in ray_results.items() if r[0] == "done"}
    assert {p.name for p in (runs.ray_dir / "cells").iterdir()} == {k[:12] for k in done}
    assert all((runs.ray_dir / "cells" / k[:12] / "adapted.json").is_file() for k in done)
    assert "lora" in out and "embedding_probe" in out and "Best fine-tune" in out


@needs_ray
def test_ray_run_used_two_worker_processes(runs: SimpleNamespace) -> None:
    _, _, stopped, _ = runs.first
    *_, driver_pid = runs.resumed
    extras = _extras(runs.ray_dir)
    assert all(isinstance(e.get("worker_pid"), int) for e in extras.values())
    by_resume = {k: e["worker_pid"] for k, e in extras.items() if k not in stopped}
    assert len(by_resume) >= N_CELLS - 2
    assert len(set(by_resume.values())) == 2, by_resume
    assert driver_pid not in by_resume.values()
    assert all("worker_pid" not in e for e in _extras(runs.local_dir).values())


@needs_ray
def test_sigterm_stops_a_ray_run_cleanly(runs: SimpleNamespace) -> None:
    rc, err, stopped, leaked = runs.first
    assert rc == 143, err[-3000:]
    assert "Traceback" not in err
    text = " ".join(err.split())
    saved = sum(r[0] == "done" for r in stopped.values())
    assert f"interrupted: {saved} cells saved; resume with --resume" in text, text
    assert len(stopped) < N_CELLS
    assert all((r[0] == "done" and len(r[6]) == 10) or (r[0] == "failed" and "no-such-embedder" in r[1])
               for r in stopped.values())
    assert not leaked, f"Ray processes left running after the stop: {sorted(leaked)}"
    final = _results(runs.ray_dir)
    assert all(final[k] == v for k, v in stopped.items())


# -- config (no cluster) ----------------------------------------------------------------------

def _load(tmp_path: Path, extra: str):
    from adaptlab.experiment import load_experiment

    return load_experiment(_experiment(tmp_path, EXPERIMENT + extra))


def test_executor_is_no_part_of_a_cell_key(tmp_path: Path) -> None:
    from adaptlab.experiment.runner import prepare

    local = _load(tmp_path / "a", "")
    ray_cfg = _load(tmp_path / "b", "executor: {kind: ray, workers: 3, cpus_per_cell: 2, gpus_per_cell: 0.5}\n")
    short = _load(tmp_path / "c", "executor: ray\n")
    assert local.executor.kind == "local" and short.executor.kind == "ray" and short.executor.workers == 2
    assert (ray_cfg.executor.workers, ray_cfg.executor.cpus_per_cell, ray_cfg.executor.gpus_per_cell) == (3, 2, 0.5)
    keys = [[c.key for c in prepare(cfg)[1]] for cfg in (local, ray_cfg, short)]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == N_CELLS
    assert local.to_dict()["executor"]["kind"] == "local"


@pytest.mark.parametrize(("extra", "field", "words"), [
    ("executor: {kind: ray, workers: 0}\n", "executor.workers", "workers must be >= 1"),
    ("executor: {kind: ray, worker: 2}\n", None, "did you mean 'workers'"),
    ("executor: rya\n", "executor", "did you mean 'ray'"),
    ("executor: {kind: ray, gpus_per_cell: -1}\n", "executor.gpus_per_cell", "gpus_per_cell must be >= 0"),
])
def test_bad_executor_config_is_one_line_with_file_and_line(tmp_path: Path, extra: str, field: str | None,
                                                            words: str) -> None:
    from adaptlab.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _load(tmp_path, extra)
    line = info.value.one_line()
    assert words in line and "exp.yaml:" in line, line
    assert info.value.line == EXPERIMENT.count("\n") + 1
    if field is not None:
        assert info.value.field == field


def test_command_line_executor_overrides(tmp_path: Path) -> None:
    from adaptlab.errors import ConfigError
    from adaptlab.experiment.config import ExecutorConfig
    from adaptlab.experiment.executors import executor_config

    base = ExecutorConfig()
    got = executor_config(base, kind="ray", workers=3, address="127.0.0.1:6379")
    assert (got.kind, got.workers, got.address, got.cpus_per_cell) == ("ray", 3, "127.0.0.1:6379", 1)
    assert executor_config(base) is base
    with pytest.raises(ConfigError, match="--workers applies to the ray executor only"):
        executor_config(base, workers=2)
    with pytest.raises(ConfigError) as info:
        executor_config(base, kind="dask")
    assert info.value.field == "--executor" and "unknown executor 'dask'" in info.value.message


def test_missing_ray_is_a_config_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptlab.errors import ConfigError
    from adaptlab.experiment.config import ExecutorConfig
    from adaptlab.experiment.executors import LocalExecutor, get_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when it is not installed
    with pytest.raises(ConfigError) as info:
        get_executor(ExecutorConfig(kind="ray"))
    assert info.value.one_line() == "--executor ray needs ray (pip install 'adaptlab[ray]')"
    assert isinstance(get_executor(ExecutorConfig()), LocalExecutor)


def test_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptlab.experiment.config import ExecutorConfig
    from adaptlab.experiment.executors import worker_env

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ADAPTLAB_CACHE", "/somewhere/cache")
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    env = worker_env(ExecutorConfig(kind="ray", cpus_per_cell=2))
    assert env["OMP_NUM_THREADS"] == "2" and env["HF_HUB_OFFLINE"] == "1"
    assert env["ADAPTLAB_CACHE"] == "/somewhere/cache" and "OPENAI_API_KEY" not in env
    import adaptlab

    src = str(Path(adaptlab.__file__).resolve().parents[1])
    if "site-packages" not in src:  # a source checkout: workers import adaptlab from the same folder
        assert env["PYTHONPATH"].split(os.pathsep)[0] == src
