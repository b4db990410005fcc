"""Faults around `adaptlab compare` on the tiny model: SIGKILL mid prompt cell, mid training and mid
store write then `--resume` (equal to an uninterrupted run), a killed model conversion, an API server
that fails, a read-only or full run folder, `report`/`demo` against a busy run folder, and an API key
that must never reach a file or the output.

Every compare is a real `python -m adaptlab` subprocess. The interruption tests share one module fixture
(a reference run beside one run killed three times and resumed) to keep the module near two minutes on
2 shared cores. Runs that must be caught mid store write go through `SLOW_WRITE_WRAPPER`, a small script
(written into the test's folder) that makes every cell's store write (`RunStore.put_cell`) sleep inside its
transaction, before COMMIT, for ``SLOW_STORE_WRITE_ENV`` seconds and then runs `adaptlab.cli.main()`, so the
kill lands mid-write deterministically. adaptlab itself has no such hook.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_api_faults import FaultServer
from test_finetune_toy import write_toy_task

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = """\
name: faults
task: task/task.yaml
model: tiny-random-llama
train_sizes: [16]
seeds: [0, 1]
limit: 48
epochs: 1
strategies:
  - zero_shot
  - name: few_shot
    options: {k: 4, selection: balanced}
  - name: lora
    label: lora
    seeds: [0]
    options: {max_steps: 24, batch_size: 4, save_every: 4, eval_every: 12, eval_limit: 4, rank: 4}
scenario: {queries_per_month: 1000, price_per_hour: 1.0}
"""
N_CELLS = 4  # zero_shot, few_shot seeds 0 and 1, lora

SLOW_STORE_WRITE_ENV = "ADAPTLAB_TESTS_SLOW_STORE_WRITE_S"
"""Seconds `SLOW_WRITE_WRAPPER` sleeps inside each cell's store transaction (unset or empty: no sleep)."""

SLOW_WRITE_WRAPPER = '''\
"""`adaptlab` CLI whose cell store writes sleep inside their transaction, before COMMIT (test-only)."""
import os
import sys
import time
from contextlib import contextmanager

from adaptlab.experiment import store

SECONDS = float(os.environ.get("%s") or 0)
_transaction, _put_cell = store.RunStore._transaction, store.RunStore.put_cell


@contextmanager
def _slow_transaction(self):
    with _transaction(self) as conn:
        yield conn
        if SECONDS and getattr(self, "_writing_cell", False):  # the body succeeded: sleep before COMMIT
            time.sleep(SECONDS)


def _put_cell_slowly(self, *args, **kwargs):
    self._writing_cell = True
    try:
        return _put_cell(self, *args, **kwargs)
    finally:
        self._writing_cell = False


store.RunStore._transaction = _slow_transaction
store.RunStore.put_cell = _put_cell_slowly

if __name__ == "__main__":
    from adaptlab.cli import main

    sys.argv[0] = "adaptlab"
    main()
''' % SLOW_STORE_WRITE_ENV


# -- helpers ------------------------------------------------------------------------------------

def _experiment(root: Path, text: str = EXPERIMENT) -> Path:
    write_toy_task(root / "task", n_test=48)  # 48 test examples: a prompt cell evaluates long enough to be caught
    path = root / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = "1"  # 2 shared cores; one thread also keeps results identical across runs
    env["COLUMNS"] = "200"
    env.pop(SLOW_STORE_WRITE_ENV, None)
    env.update(extra)
    return env


def _adaptlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "adaptlab", *args]


def _compare(exp: Path, out: Path, *extra: str) -> list[str]:
    return _adaptlab("compare", str(exp), "--out", str(out), "--no-progress", *extra)


def _slow_compare(exp: Path, out: Path, *extra: str) -> list[str]:
    """`_compare` through `SLOW_WRITE_WRAPPER` (written beside the experiment file); set
    `SLOW_STORE_WRITE_ENV` in the environment to make each cell's store write sleep before COMMIT."""
    wrapper = exp.parent / "slow_store_write.py"
    wrapper.write_text(SLOW_WRITE_WRAPPER, encoding="utf-8")
    return [sys.executable, str(wrapper), "compare", str(exp), "--out", str(out), "--no-progress", *extra]


def _popen(cmd: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=_env(**env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)


def _done_keys(run_dir: Path) -> set[str]:
    db = run_dir / "adaptlab.db"
    if not db.is_file():
        return set()
    try:
        conn = _ro(db)
        try:
            return {r[0] for r in conn.execute("SELECT key FROM cells WHERE status = 'done'")}
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return set()


def _writing(run_dir: Path) -> bool:
    """True while another connection holds the database's write lock (a transaction is open)."""
    conn = sqlite3.connect(run_dir / "adaptlab.db", timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc) or "busy" in str(exc), exc
        return True
    finally:
        conn.close()


def _wait(cond: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: {err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _check_db(run_dir: Path) -> None:
    """The database is intact and every stored cell has all its predictions."""
    conn = _ro(run_dir / "adaptlab.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for key, n_test, status in conn.execute("SELECT key, n_test, status FROM cells").fetchall():
            n = conn.execute("SELECT count(*) FROM predictions WHERE cell = ?", (key,)).fetchone()[0]
            assert n == (n_test if status == "done" else 0), key
    finally:
        conn.close()


def _results(run_dir: Path) -> dict[str, tuple]:
    from adaptlab.experiment.store import RunStore

    with RunStore(run_dir, create=False) as store:
        return {rec.key: (rec.status, rec.value, rec.ci_low, rec.ci_high, rec.n_test,
                          [(p.example_id, p.pred, p.score) for p in store.predictions(rec.key)])
                for rec in store.cells()}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# -- interruption -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A reference run beside a run that is SIGKILLed (1) while a few-shot cell evaluates, (2) while
    the LoRA cell trains (after a checkpoint), (3) inside the LoRA cell's store transaction, while
    `adaptlab report` and `adaptlab demo` try the busy folder, and (4) resumed to the end."""
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.runner import prepare

    root = tmp_path_factory.mktemp("faults")
    exp = _experiment(root)
    cells = prepare(load_experiment(exp))[1]
    by_name = {(c.strategy, c.seed): c for c in cells}
    few0, lora = by_name[("few_shot", 0)], by_name[("lora", 0)]
    ref_dir, run = root / "reference", root / "victim"
    folder = {c.key: run / "cells" / c.short_key for c in cells}
    ns = SimpleNamespace(exp=exp, root=root, cells=cells, ref_dir=ref_dir, run=run, few0=few0, lora=lora)
    started: list[subprocess.Popen] = []

    def start(cmd: list[str], **env: str) -> subprocess.Popen:
        started.append(_popen(cmd, root, **env))
        return started[-1]

    try:
        reference = start(_compare(exp, ref_dir))

        # 1. mid prompt cell: few_shot seed 0 has saved its artifact and is evaluating
        victim = start(_compare(exp, run))
        _wait(lambda: (folder[few0.key] / "adapted.json").is_file(), victim, "the few-shot cell evaluated")
        _kill(victim)
        ns.after_prompt_kill = (_done_keys(run), folder[few0.key].is_dir(),
                                (folder[few0.key] / "metrics.json").exists())
        _check_db(run)

        # 2. mid training: the LoRA cell has written a checkpoint at step >= 8 but has not finished
        def training() -> bool:
            steps = [int(m.group(1)) for p in (folder[lora.key] / "checkpoints").glob("step-*")
                     if (m := re.fullmatch(r"step-(\d+)", p.name))]
            return bool(steps) and max(steps) >= 8

        victim = start(_compare(exp, run, "--resume"))
        _wait(training, victim, "the LoRA cell trained 8 steps")
        _kill(victim)
        ns.after_train_kill = (_done_keys(run), (folder[lora.key] / "adapted.json").exists())
        _check_db(run)

        # 3. mid store write: the LoRA cell's transaction sleeps before COMMIT; meanwhile report and demo run
        victim = start(_slow_compare(exp, run, "--resume"), **{SLOW_STORE_WRITE_ENV: "120"})
        _wait(lambda: (folder[lora.key] / "metrics.json").is_file() and _writing(run), victim,
              "the LoRA cell's store write")
        probes = {"report": start(_adaptlab("report", str(run))),
                  "demo": start(_adaptlab("demo", "--out", str(run), "--model", "tiny-random-llama", "--no-progress"))}
        for name, proc in probes.items():
            out, err = proc.communicate(timeout=180)
            setattr(ns, name, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        ns.victim_pid = victim.pid
        ns.still_writing = victim.poll() is None and _writing(run)
        results = run / "results.json"
        ns.report_json = json.loads(results.read_text()) if results.is_file() else None
        _kill(victim)
        ns.after_write_kill = _done_keys(run)
        _check_db(run)

        # 4. resume to the end
        ns.resumed = subprocess.run(_compare(exp, run, "--resume"), env=_env(), cwd=root, capture_output=True,
                                    text=True, timeout=300)
        out, err = reference.communicate(timeout=300)
        ns.reference = (reference.returncode, out, err)
    finally:  # a failed step must not leave runs behind
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return ns


def test_sigkill_during_a_prompt_cell(killed: SimpleNamespace) -> None:
    done, partial_folder, has_metrics = killed.after_prompt_kill
    assert done == {c.key for c in killed.cells if c.strategy == "zero_shot"}
    assert partial_folder and not has_metrics  # killed inside the cell, before its metrics


def test_sigkill_during_training(killed: SimpleNamespace) -> None:
    done, finished_artifact = killed.after_train_kill
    assert done == {c.key for c in killed.cells if c.strategy != "lora"}
    assert not finished_artifact


def test_sigkill_during_the_store_write_loses_only_that_cell(killed: SimpleNamespace) -> None:
    assert killed.still_writing, "the kill must land inside the transaction"
    assert killed.after_write_kill == {c.key for c in killed.cells if c.strategy != "lora"}


def test_resume_after_every_kill_equals_an_uninterrupted_run(killed: SimpleNamespace) -> None:
    rc, _, err = killed.reference
    assert rc == 0, err[-3000:]
    assert killed.resumed.returncode == 0, killed.resumed.stderr[-3000:]
    reference, resumed = _results(killed.ref_dir), _results(killed.run)
    keys = {c.key for c in killed.cells}
    assert set(reference) == set(resumed) == keys and len(keys) == N_CELLS
    for key in keys:
        assert resumed[key] == reference[key], key
        assert resumed[key][0] == "done" and len(resumed[key][5]) == 48
    _check_db(killed.run)
    # exactly one artifact folder per cell; nothing half-written left behind
    assert {p.name for p in (killed.run / "cells").iterdir()} == {k[:12] for k in keys}
    assert not list((killed.run / "cells").glob("*/checkpoints"))
    assert not [p for p in killed.run.rglob("*") if ".tmp" in p.name]


def test_report_reads_a_run_while_compare_writes_it(killed: SimpleNamespace) -> None:
    """`adaptlab report` needs no lock: it reads the committed cells while compare holds a write open."""
    assert killed.report.returncode == 0, killed.report.stderr[-3000:]
    doc = killed.report_json
    assert doc is not None
    assert {c["key"] for c in doc["cells"]} == {c.key for c in killed.cells if c.strategy != "lora"}


def test_demo_on_a_busy_run_folder_is_refused(killed: SimpleNamespace) -> None:
    assert killed.demo.returncode == 1
    line = _one_line(killed.demo.stderr)
    assert f"in use by another adaptlab compare (pid {killed.victim_pid})" in line, line


# -- model conversion ---------------------------------------------------------------------------

_CONVERT = """
import os, sys, time
from pathlib import Path
from adaptlab.models import convert
cache, log, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])

def fake_convert(folder, gguf, tokenizer_dir):  # the real one de-quantises the GGUF (~60 s)
    with open(log, "a") as f:
        f.write(f"start {os.getpid()}\\n")
    folder.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    time.sleep(hold)
    (folder / convert.CONVERSION_MARKER).write_text("{}")
    with open(log, "a") as f:
        f.write(f"done {os.getpid()}\\n")

convert._convert_into = fake_convert
print("ready", flush=True)
print(convert.ensure_converted(cache), flush=True)
"""


def _convert(cache: Path, log: Path, hold: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CONVERT, str(cache), str(log), str(hold)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_conversion_killed_mid_build_is_rebuilt_by_the_process_waiting_for_it(tmp_path: Path,
                                                                                monkeypatch) -> None:
    """`ensure_converted` with the GGUF de-quantisation replaced by a slow fake: the first process is
    SIGKILLed mid-build while a second waits on the lock; nothing is published until the second has
    rebuilt it, and a third call reuses the cache."""
    from adaptlab.models import convert as models

    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    first, second = _convert(cache, log, 120), None
    try:
        _wait(lambda: log.is_file() and "start" in log.read_text(), first, "the first build started")
        second = _convert(cache, log, 1.5)
        assert second.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the second process is now blocked on the conversion lock
        assert log.read_text().splitlines() == [f"start {first.pid}"]
        _kill(first)
        assert not models.is_converted(cache) and not models.converted_dir(cache).exists()
        out, err = second.communicate(timeout=60)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert second.returncode == 0, err
    assert out.strip() == str(models.converted_dir(cache))
    assert log.read_text().splitlines() == [f"start {first.pid}", f"start {second.pid}", f"done {second.pid}"]
    assert models.is_converted(cache)
    assert not list(models.converted_dir(cache).parent.glob(".*.tmp-*"))  # the killed build's temp is gone

    def must_not_build(*args: object) -> None:
        raise AssertionError("the cache is complete: no rebuild")

    monkeypatch.setattr(models, "_convert_into", must_not_build)
    assert models.ensure_converted(cache) == models.converted_dir(cache)


# -- API faults and secrets ---------------------------------------------------------------------

@pytest.fixture
def fake_api() -> Iterator[Callable[[str], FaultServer]]:
    """`test_api_faults.FaultServer` (an OpenAI-compatible completions server in a thread): ``ok``
    answers with echo + logprobs, ``500`` always fails; ``requests`` records what it received."""
    servers: list[FaultServer] = []

    def start(mode: str) -> FaultServer:
        servers.append(FaultServer(mode).start())
        return servers[-1]

    yield start
    for s in servers:
        s.close()


API_EXPERIMENT = """\
name: api
task: task/task.yaml
model: tiny-random-llama
backend: api
base_url: {base_url}
api_key_env: ADAPTLAB_FAULTS_KEY
api: {{timeout_s: 2, max_retries: 1, concurrency: 2}}
train_sizes: [8]
seeds: [0]
limit: 8
strategies:
{strategies}
scenario: {{queries_per_month: 1000}}
"""


@pytest.mark.parametrize(("api", "expected"), [
    ("{timeout_s: 0}", ":7 [api.timeout_s]: timeout_s must be in (0, 3600] seconds"),
    ("{max_retries: 21}", ":7 [api.max_retries]: max_retries must be in 0..20"),
    ("{concurrency: 0}", ":7 [api.concurrency]: concurrency must be >= 1"),
    ("{retries: 2}", ":7 [retries]: unknown key 'retries' (did you mean 'max_retries'?)"),
    ("5", ":7 [api]: must be a mapping of keys"),
])
def test_api_options_are_validated_with_file_line_and_key(tmp_path: Path, api: str, expected: str) -> None:
    from adaptlab.errors import ConfigError
    from adaptlab.experiment import load_experiment

    text = API_EXPERIMENT.format(base_url="http://127.0.0.1:9/v1", strategies="  - zero_shot\n")
    exp = _experiment(tmp_path, text.replace("api: {timeout_s: 2, max_retries: 1, concurrency: 2}", f"api: {api}"))
    with pytest.raises(ConfigError) as err:
        load_experiment(exp)
    assert str(err.value).startswith(str(exp) + expected), str(err.value)
    cfg = load_experiment(_experiment(tmp_path, text))
    assert (cfg.api.timeout_s, cfg.api.max_retries, cfg.api.concurrency) == (2, 1, 2)


def test_failing_api_server_fails_its_cells_the_others_finish_and_compare_exits_3(tmp_path: Path,
                                                                                    fake_api) -> None:
    server = fake_api("500")
    exp = _experiment(tmp_path, API_EXPERIMENT.format(
        base_url=server.base_url, strategies="  - zero_shot\n  - name: few_shot\n    options: {k: 2}\n"
                                             "  - embedding_probe\n"))
    run = tmp_path / "run"
    start = time.monotonic()
    proc = subprocess.run(_compare(exp, run), env=_env(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    results = {rec.strategy: rec for rec in _cells(run)}
    assert results["embedding_probe"].status == "done" and results["embedding_probe"].n_test == 8
    for name in ("zero_shot", "few_shot"):
        rec = results[name]
        assert rec.status == "failed" and "\n" not in rec.error, rec
        assert f"API server {server.base_url} failed after 1 retry: HTTP 500: internal server error" in rec.error
        assert not (run / "cells" / rec.key[:12]).exists()  # the failed cell's folder is removed
    text = " ".join(proc.stderr.split())
    assert "2 of 3 cells failed" in text and "--resume" in text, text
    assert "HTTP 500" in text
    # bounded: each prompt was tried at most 1 + max_retries times, and the run did not hang
    per_prompt = server.per_prompt("/completions")
    assert per_prompt and max(per_prompt.values()) <= 2, per_prompt
    assert len(server.requests) <= 1 + 2 * 4 * 2, len(server.requests)  # probe + 2 cells x <= 4 in flight x 2 tries
    assert elapsed < 120
    assert (run / "report.html").is_file() and (run / "results.json").is_file()  # written despite the failures


def _cells(run: Path) -> list:
    from adaptlab.experiment.store import RunStore

    with RunStore(run, create=False) as store:
        return store.cells()


def test_api_key_reaches_the_server_but_no_file_and_no_output(tmp_path: Path, fake_api) -> None:
    key = "sk-planted-" + os.urandom(12).hex()
    server = fake_api("ok")
    exp = _experiment(tmp_path, API_EXPERIMENT.format(
        base_url=server.base_url, strategies="  - zero_shot\n  - name: few_shot\n    options: {k: 2}\n"))
    run = tmp_path / "run"
    proc = subprocess.run(_adaptlab("-v", "--debug", "compare", str(exp), "--out", str(run), "--no-progress"),
                          env=_env(ADAPTLAB_FAULTS_KEY=key), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {rec.status for rec in _cells(run)} == {"done"}
    # the test means something: the server saw the key, as a Bearer token
    auth = {next((v for k, v in h.items() if k.lower() == "authorization"), None)
            for path, _, _, h in server.requests if path.endswith("/completions")}
    assert auth == {f"Bearer {key}"}
    fragments = [key, key[len("sk-planted-"):], key[-12:]]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"adaptlab.db", "report.html", "summary.md", "results.json", "metrics.json", "adapted.json"} <= \
        {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert not any(f.encode() in data for f in fragments), path
    for stream in (proc.stdout, proc.stderr):
        assert not any(f in stream for f in fragments)
    assert "DEBUG" in proc.stderr and "ADAPTLAB_FAULTS_KEY" in (run / "results.json").read_text()


# -- resources ----------------------------------------------------------------------------------

RESOURCE_EXPERIMENT = EXPERIMENT.split("strategies:")[0].replace("limit: 48", "limit: 16") + (
    "strategies:\n  - zero_shot\n  - name: few_shot\n    options: {k: 4, selection: balanced}\n"
    "scenario: {}\n")


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount a tmpfs (``size``, ``ro``) under tmp_path; skip where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(name: str, size: str, *, ro: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_run_folder_below_a_file_or_read_only_is_one_line_exit_1(tmp_path: Path, mount_tmpfs) -> None:
    exp = _experiment(tmp_path, RESOURCE_EXPERIMENT)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = subprocess.run(_compare(exp, blocker / "run"), env=_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith("error: ") and f"{blocker / 'run'}: cannot create run directory: Not a directory" in line

    ro = mount_tmpfs("ro", "1m", ro=True)  # read-only even for root
    proc = subprocess.run(_compare(exp, ro), env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert f"{ro}: read-only run directory: adaptlab must write adaptlab.db here (use another --out)" in line, line
    assert list(ro.iterdir()) == []


def test_disk_full_mid_run_stops_with_one_line_and_keeps_the_store(tmp_path: Path, mount_tmpfs) -> None:
    """The disk fills up after the first cell: the run stops at once with one line (exit 1), the
    database keeps the finished cell intact, and once space is freed --resume completes the run."""
    disk = mount_tmpfs("disk", "24m")
    exp = _experiment(tmp_path, RESOURCE_EXPERIMENT)
    run = disk / "run"
    proc = _popen(_slow_compare(exp, run), tmp_path, **{SLOW_STORE_WRITE_ENV: "1"})
    _wait(lambda: len(_done_keys(run)) >= 1, proc, "the first cell was saved")
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == 28
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    line = _one_line(err)
    assert line.startswith("error: ") and str(run) in line, line
    assert re.search(r"no space left on device|database or disk is full", line, re.I), line
    done = _done_keys(run)
    assert 1 <= len(done) < 3
    _check_db(run)

    filler.unlink()
    proc = subprocess.run(_compare(exp, run, "--resume"), env=_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_done_keys(run)) == 3 and done <= _done_keys(run)
    _check_db(run)
