"""`adaptlab compare` end to end on the tiny model: every cell once, SIGKILL + --resume reproduces an
uninterrupted run exactly, a second compare on a busy run dir is refused, SIGTERM exits 143 cleanly.

The subprocess runs share one module fixture (one reference run beside one run that is killed, stopped
and resumed) to keep the module at about a minute and a half on 2 shared cores."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_finetune_toy import one_thread_torch, write_toy_task

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = """\
name: toy
task: task/task.yaml
model: tiny-random-llama
train_sizes: [8, 16]
seeds: [0, 1]
limit: 12
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
scenario: {queries_per_month: 1000, price_per_hour: 1.0}
"""
N_CELLS = 1 + 2 + 2 + 1


def _experiment(root: Path, text: str = EXPERIMENT) -> Path:
    write_toy_task(root / "task")
    path = root / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _cmd(exp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adaptlab", "compare", str(exp), "--out", str(out), "--no-progress", *extra]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = "1"  # runs share a 2-core machine; one thread each also keeps results identical
    env["COLUMNS"] = "200"
    return env


def _done(run_dir: Path) -> int:
    """Finished cells in the run's database (read-only; 0 before it exists)."""
    db = run_dir / "adaptlab.db"
    if not db.is_file():
        return 0
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _wait(cond, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not cond():
        time.sleep(0.05)


def _results(run_dir: Path) -> dict[str, tuple]:
    from adaptlab.experiment.store import RunStore

    with RunStore(run_dir, create=False) as store:
        out = {}
        for rec in store.cells():
            rows = [(p.example_id, p.pred, p.score) for p in store.predictions(rec.key)]
            out[rec.key] = (rec.status, rec.value, rec.ci_low, rec.ci_high, rec.n_test, rows)
        return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """An uninterrupted reference run; beside it a run that a second compare tries to enter, that is
    SIGKILLed mid-grid, resumed and stopped with SIGTERM after one more cell, and resumed to the end."""
    root = tmp_path_factory.mktemp("compare")
    exp = _experiment(root)
    ref_dir, victim_dir = root / "reference", root / "victim"
    reference = subprocess.Popen(_cmd(exp, ref_dir), env=_env(), cwd=root, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cmd(exp, victim_dir), env=_env(), cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    lock = victim_dir / ".lock"
    _wait(lambda: lock.is_file() and lock.read_text().strip().isdigit(), victim)
    assert victim.poll() is None, "the run ended before a second compare could try its folder"
    second = subprocess.run(_cmd(exp, victim_dir, "--resume"), env=_env(), cwd=root, capture_output=True,
                            text=True, timeout=120)
    _wait(lambda: _done(victim_dir) >= 1, victim)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = _done(victim_dir)

    # resume, then SIGTERM once it has saved one more cell
    term = subprocess.Popen(_cmd(exp, victim_dir, "--resume"), env=_env(), cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait(lambda: _done(victim_dir) > killed_at, term)
    assert term.poll() is None, "the resumed run finished before it could be stopped"
    term.send_signal(signal.SIGTERM)
    _, term_err = term.communicate(timeout=120)
    after_term = _results(victim_dir)

    resumed = subprocess.run(_cmd(exp, victim_dir, "--resume"), env=_env(), cwd=root, capture_output=True,
                             text=True, timeout=600)
    ref_out, ref_err = reference.communicate(timeout=600)
    return SimpleNamespace(exp=exp, root=root, ref_dir=ref_dir, victim_dir=victim_dir, victim_pid=victim.pid,
                           reference=(reference.returncode, ref_out, ref_err), second=second,
                           killed_at=killed_at, term=(term.returncode, term_err, after_term), resumed=resumed)


def _planned_keys(exp: Path, run_dir: Path) -> set[str]:
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.runner import prepare

    cfg = load_experiment(exp)
    keys = {c.key for c in prepare(cfg)[1]}
    from adaptlab.experiment.store import RunStore

    with RunStore(run_dir, create=False) as store:
        assert sorted(store.experiment()["resolved"]["cells"]) == sorted(keys)
    return keys


def test_full_run_writes_every_cell_once(runs: SimpleNamespace) -> None:
    rc, out, err = runs.reference
    assert rc == 0, err[-3000:]
    results = _results(runs.ref_dir)
    keys = _planned_keys(runs.exp, runs.ref_dir)
    assert set(results) == keys and len(keys) == N_CELLS
    assert all(r[0] == "done" and r[4] == 12 and len(r[5]) == 12 for r in results.values())
    # one artifact folder per cell, loadable by `adaptlab predict`
    folders = {p.name for p in (runs.ref_dir / "cells").iterdir()}
    assert folders == {k[:12] for k in keys}
    assert all((runs.ref_dir / "cells" / f / "adapted.json").is_file() and
               (runs.ref_dir / "cells" / f / "metrics.json").is_file() for f in folders)
    # the printed table and headline
    assert "few_shot k=2 balanced" in out and "embedding_probe" in out and "Best fine-tune" in out
    # the recommendation's break-even sentence, or (the tiny random model's prompts sit at chance) why a family
    # was left out: a variant no better than the majority baseline is never recommended while another is
    flat = " ".join(out.split())  # the console wraps long lines wherever the figures' widths put the break
    assert "break-even" in flat.lower() or "from the first query" in flat or "no better than guessing" in flat, out


def test_sigkill_then_resume_equals_an_uninterrupted_run(runs: SimpleNamespace) -> None:
    assert 1 <= runs.killed_at < N_CELLS
    assert runs.resumed.returncode == 0, runs.resumed.stderr[-3000:]
    resumed, reference = _results(runs.victim_dir), _results(runs.ref_dir)
    assert set(resumed) == set(reference) == _planned_keys(runs.exp, runs.victim_dir)
    for key, ref in reference.items():
        assert resumed[key] == ref, key
    # no partial folder of the killed cell is left behind
    assert {p.name for p in (runs.victim_dir / "cells").iterdir()} == {k[:12] for k in reference}


def test_second_compare_on_a_busy_run_dir_is_refused(runs: SimpleNamespace) -> None:
    second = runs.second
    assert second.returncode == 1
    text = " ".join(second.stderr.split())
    assert f"in use by another adaptlab compare (pid {runs.victim_pid})" in text, text
    assert "Traceback" not in second.stderr


def test_used_run_dir_without_resume_gets_a_hint(runs: SimpleNamespace) -> None:
    before = _results(runs.ref_dir)
    proc = subprocess.run(_cmd(runs.exp, runs.ref_dir), env=_env(), cwd=runs.root, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    text = " ".join(proc.stderr.split())
    assert f"already holds {N_CELLS} cells" in text and "--resume" in text and "--out" in text, text
    assert _results(runs.ref_dir) == before


def test_sigterm_exits_143_with_the_store_intact_and_resume_completes(runs: SimpleNamespace) -> None:
    rc, err, stored = runs.term
    assert rc == 143, err[-3000:]
    saved = len(stored)
    assert runs.killed_at < saved < N_CELLS
    assert f"interrupted: {saved} cells saved; resume with --resume" in " ".join(err.split())
    assert "Traceback" not in err
    assert all(r[0] == "done" and len(r[5]) == 12 for r in stored.values())
    assert runs.resumed.returncode == 0, runs.resumed.stderr[-3000:]
    final = _results(runs.victim_dir)
    assert len(final) == N_CELLS and all(final[k] == v for k, v in stored.items())


@pytest.fixture
def one_thread():
    yield from one_thread_torch()


def test_failed_cell_is_recorded_and_the_run_goes_on(tmp_path: Path, one_thread) -> None:
    from adaptlab.experiment import load_experiment, run_experiment

    text = EXPERIMENT.split("strategies:")[0] + (
        "strategies:\n  - zero_shot\n  - name: embedding_probe\n    seeds: [0]\n    train_sizes: [8]\n"
        "    options: {embedder: no-such-embedder}\nscenario: {}\n")
    cfg = load_experiment(_experiment(tmp_path, text))
    out = tmp_path / "run"
    records = run_experiment(cfg, out, progress=False)
    status = {r.strategy: r for r in records}
    assert status["zero_shot"].status == "done" and status["zero_shot"].n_test == 12
    failed = status["embedding_probe"]
    assert failed.status == "failed" and "no-such-embedder" in failed.error and "\n" not in failed.error
    # resume re-runs the failed cell only
    zero_metrics = out / "cells" / status["zero_shot"].key[:12] / "metrics.json"
    stamp = zero_metrics.stat().st_mtime_ns
    again = run_experiment(cfg, out, resume=True, progress=False)
    assert [r.status for r in again] == ["done", "failed"]
    assert zero_metrics.stat().st_mtime_ns == stamp


def test_embedding_probe_cells_share_one_loaded_embedder(tmp_path: Path, monkeypatch) -> None:
    import adaptlab.models.embeddings as embeddings
    from adaptlab.experiment import load_experiment, run_experiment

    loads = []
    real = embeddings.load_embedder
    monkeypatch.setattr(embeddings, "load_embedder", lambda name, *a, **kw: loads.append(name) or real(name, *a, **kw))
    text = EXPERIMENT.split("strategies:")[0] + "strategies:\n  - embedding_probe\nscenario: {}\n"
    records = run_experiment(load_experiment(_experiment(tmp_path, text)), tmp_path / "run", progress=False)
    assert [r.status for r in records] == ["done"] * 4  # n = 8, 16 x seeds 0, 1
    assert loads == ["minilm-l6"]


def test_signal_during_a_store_write_is_deferred_to_its_end() -> None:
    from adaptlab.experiment.signals import RunSignals, StopRun

    before = signal.getsignal(signal.SIGINT)
    steps = []
    with RunSignals() as sig:
        with pytest.raises(StopRun) as info:
            with sig.critical():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(100):  # the handler runs between these bytecodes and must not raise here
                    time.sleep(0.001)
                steps.append("write finished")
        assert info.value.signum == signal.SIGINT and steps == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is before
    with RunSignals():
        with pytest.raises(StopRun):  # outside a write: at once
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                time.sleep(0.001)
