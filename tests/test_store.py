"""The run store: real SQLite files, real subprocesses for locking, concurrency and SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest

from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.experiment.store import RunLockedError, RunStore, environment_info, log_cell_mlflow
from adaptlab.results import CellRecord, PredictionRow

SRC = Path(__file__).resolve().parents[1] / "src"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _same(a: object, b: object) -> bool:
    """Equality where NaN equals NaN (recursively) and int/float types must match."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def full_record(key: str = "k" * 64) -> CellRecord:
    """A record with a non-default value in every field."""
    return CellRecord(
        key=key, strategy="few_shot", options={"k": 8, "selection": "balanced", "temps": [0.5, None]},
        n_train=8, seed=2, variant="few_shot k=8 balanced", status="done", error=None, metric="macro_f1",
        value=0.8125, ci_low=0.75, ci_high=0.875, n_test=3, train_seconds=1.25, train_flops=3.5e12,
        peak_memory_bytes=123_456_789_012, trainable_params=4096, artifact_bytes=2048,
        query_prompt_tokens=412.5, query_flops=1.1e11, query_seconds=0.0625, artifact_dir="cells/kkkk",
        report={"labels": ["pos", "neg"], "confusion": [[1, 0], [1, 1]], "nan": math.nan, "ü": "é"},
        extra={"history": [{"step": 1, "score": 0.5}]}, labels_used=108,
    )


def preds(key: str, n: int, tag: str = "") -> list[PredictionRow]:
    return [PredictionRow(key, f"ex{i}", f"input {i} {tag} <b>é</b>", "pos" if i % 2 else "neg",
                          "pos", float(i % 2)) for i in range(n)]


def test_every_field_round_trips(tmp_path: Path) -> None:
    rec = full_record()
    nan_rec = CellRecord(key="f" * 64, strategy="lora", options={}, n_train=16, seed=0, variant="lora r=8",
                         status="failed", error="ModelError: out of memory", train_seconds=math.nan,
                         query_seconds=math.inf)
    with RunStore(tmp_path / "run") as store:
        store.put_cell(rec, preds(rec.key, 3), {"metric": "macro_f1"})
        store.put_cell(nan_rec, [], None)
    with RunStore(tmp_path / "run", create=False) as store:  # a fresh connection reads the file
        got = {c.key: c for c in store.cells()}
    assert {f.name for f in fields(CellRecord)} <= rec.to_dict().keys()
    for want in (rec, nan_rec):
        assert _same(got[want.key].to_dict(), want.to_dict()), (got[want.key], want)
    assert math.isnan(got[nan_rec.key].value) and got[nan_rec.key].peak_memory_bytes is None
    assert got[nan_rec.key].query_seconds == math.inf and not got[nan_rec.key].ok
    assert isinstance(got[rec.key].peak_memory_bytes, int) and isinstance(got[rec.key].train_seconds, float)


def test_predictions_in_order_and_metrics_doc(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rec = full_record()
    rows = preds(rec.key, 12)[::-1]  # idx order is the order given, not example id order
    rows[3] = replace(rows[3], score=math.nan, gold=json.dumps(["a", "b"]))
    doc = {"accuracy": 0.5, "report": {"x": 1}, "predictions": [{"id": "ex0"}]}
    store.put_cell(rec, rows, doc)
    got = store.predictions(rec.key)
    assert [p.example_id for p in got] == [p.example_id for p in rows]
    assert all(_same(vars(a), vars(b)) for a, b in zip(got, rows, strict=True))
    assert store.metrics_doc(rec.key) == {"accuracy": 0.5, "report": {"x": 1}}  # predictions live in their table
    assert store.predictions("nope") == [] and store.metrics_doc("nope") is None
    with pytest.raises(ValueError, match="prediction for cell"):
        store.put_cell(replace(rec, key="other"), rows, None)


def test_put_cell_replaces_row_and_predictions(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    failed = replace(full_record(), status="failed", error="boom", value=math.nan)
    other = full_record("o" * 64)
    store.put_cell(failed, preds(failed.key, 7, "old"), {"try": 1})
    store.put_cell(other, preds(other.key, 2), None)
    assert store.done_keys() == {other.key}
    assert [c.key for c in store.cells(include_failed=False)] == [other.key]
    done = replace(failed, status="done", error=None, value=0.9)
    store.put_cell(done, preds(done.key, 3, "new"), {"try": 2})
    assert store.done_keys() == {failed.key, other.key}
    assert len(store.cells()) == 2
    new_rows = store.predictions(done.key)
    assert len(new_rows) == 3 and all("new" in p.input for p in new_rows)
    assert store.metrics_doc(done.key) == {"try": 2}
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 5
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"


def test_failed_write_rolls_back_to_old_state(tmp_path: Path) -> None:
    """SQLite aborts the insert of the 6th prediction: the whole put_cell is undone."""
    store = RunStore(tmp_path)
    rec = full_record()
    store.put_cell(rec, preds(rec.key, 4, "old"), {"v": "old"})
    conn = sqlite3.connect(store.db_path)
    conn.execute("CREATE TRIGGER no_six BEFORE INSERT ON predictions WHEN NEW.idx = 5 "
                 "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        store.put_cell(replace(rec, value=0.1), preds(rec.key, 9, "new"), {"v": "new"})
    assert store.cells()[0].value == rec.value
    assert [p.input for p in store.predictions(rec.key)] == [p.input for p in preds(rec.key, 4, "old")]
    assert store.metrics_doc(rec.key) == {"v": "old"}
    store.put_cell(replace(rec, value=0.2), preds(rec.key, 5, "new"), None)  # still writable afterwards
    assert store.cells()[0].value == 0.2


def test_experiment_and_environment(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    assert store.experiment() is None and store.environment() is None and store.timestamps() is None
    store.save_experiment({"name": "demo", "source": tmp_path / "exp.yaml", "seeds": (0, 1)}, {"python": "3"})
    assert store.experiment() == {"name": "demo", "source": str(tmp_path / "exp.yaml"), "seeds": [0, 1]}
    created, updated = store.timestamps()
    time.sleep(0.01)
    store.save_experiment({"name": "demo2"}, {"python": "4"})
    assert store.experiment() == {"name": "demo2"} and store.environment() == {"python": "4"}
    created2, updated2 = store.timestamps()
    assert created2 == created and updated2 > updated


def test_missing_corrupt_and_foreign_databases(tmp_path: Path) -> None:
    with pytest.raises(AdaptlabError, match="no adaptlab run in"):
        RunStore(tmp_path / "empty", create=False)
    assert not (tmp_path / "empty").exists()

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "adaptlab.db").write_bytes(b"definitely not sqlite\n" * 100)
    for create in (True, False):
        with pytest.raises(AdaptlabError) as err:
            RunStore(junk, create=create)
        assert "adaptlab.db" in str(err.value) and "\n" not in str(err.value)
        assert "corrupt" in str(err.value) and isinstance(err.value.__cause__, sqlite3.DatabaseError)
    assert (junk / "adaptlab.db").read_bytes() == b"definitely not sqlite\n" * 100  # left untouched

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    sqlite3.connect(foreign / "adaptlab.db").execute("CREATE TABLE songs (title TEXT)").connection.commit()
    with pytest.raises(AdaptlabError, match="not an adaptlab run database"):
        RunStore(foreign)

    newer = tmp_path / "newer"
    RunStore(newer).close()
    conn = sqlite3.connect(newer / "adaptlab.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    with pytest.raises(AdaptlabError, match="newer adaptlab"):
        RunStore(newer, create=False)

    (tmp_path / "afile").write_text("x")
    with pytest.raises(AdaptlabError, match="not a directory"):
        RunStore(tmp_path / "afile")


def test_schema_1_run_is_migrated_on_open(tmp_path: Path) -> None:
    """A run written before cells recorded their family (schema 1) opens and gains the family column."""
    rec = full_record()
    with RunStore(tmp_path) as store:
        store.put_cell(rec, preds(rec.key, 3), {"metric": "macro_f1"})
    conn = sqlite3.connect(tmp_path / "adaptlab.db")
    conn.execute("ALTER TABLE cells DROP COLUMN family")
    conn.execute("ALTER TABLE cells DROP COLUMN labels_used")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with RunStore(tmp_path, create=False) as store:
        assert store.schema_version == 3
        (got,) = store.cells()
    assert got.family == "prompt" and got.labels_used is None and got.labels == rec.n_train
    assert _same(got.to_dict(), {**rec.to_dict(), "labels_used": None})
    conn = sqlite3.connect(tmp_path / "adaptlab.db")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    assert conn.execute("SELECT family, labels_used FROM cells").fetchall() == [("prompt", None)]


def _schema_2_run(folder: Path, rec: CellRecord) -> None:
    """A run database as schema 2 wrote it: no ``labels_used`` column."""
    with RunStore(folder) as store:
        store.put_cell(rec, preds(rec.key, 3), {"metric": "macro_f1"})
    conn = sqlite3.connect(folder / "adaptlab.db")
    conn.execute("ALTER TABLE cells DROP COLUMN labels_used")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def test_schema_2_run_is_migrated_to_3(tmp_path: Path) -> None:
    """A run written before cells recorded the labels they used (schema 2) gains ``labels_used``: NULL for its old
    cells (their ``labels`` fall back to n_train), stored for cells written afterwards."""
    old = full_record()
    _schema_2_run(tmp_path, old)
    with RunStore(tmp_path) as store:
        assert store.schema_version == 3
        (got,) = store.cells()
        assert got.labels_used is None and got.labels == old.n_train == 8
        assert _same(got.to_dict(), {**old.to_dict(), "labels_used": None})
        new = replace(full_record("n" * 64), labels_used=8 + 100)
        store.put_cell(new, preds(new.key, 2))
    with RunStore(tmp_path, create=False) as store:
        by_key = {c.key: c for c in store.cells()}
    assert by_key[new.key].labels_used == 108 and by_key[new.key].labels == 108
    assert by_key[old.key].labels_used is None
    conn = sqlite3.connect(tmp_path / "adaptlab.db")
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
        columns = [r[1] for r in conn.execute("PRAGMA table_info(cells)")]
    finally:
        conn.close()
    assert columns.count("labels_used") == 1


def test_schema_2_run_reads_from_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-only, a schema 2 run is read as it is (not migrated): ``labels_used`` reads as None."""
    rec = full_record()
    _schema_2_run(tmp_path, rec)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as a read-only folder looks (even to root)
    with RunStore(tmp_path, create=False) as store:
        assert store.readonly and store.schema_version == 2
        (got,) = store.cells()
    monkeypatch.undo()
    assert got.labels_used is None and got.labels == rec.n_train
    conn = sqlite3.connect(tmp_path / "adaptlab.db")
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
    finally:
        conn.close()


READONLY_CHECK = """
import math, os, sys
from adaptlab.errors import AdaptlabError
from adaptlab.results import CellRecord
from adaptlab.experiment.store import RunStore
run_dir = sys.argv[1]
if os.geteuid() == 0:  # root ignores permissions: become nobody (modules are imported already)
    os.setgid(65534); os.setuid(65534)
try:
    RunStore(run_dir)
    print("create: opened")
except AdaptlabError as exc:
    print("create:", exc)
store = RunStore(run_dir, create=False)
print("cells:", [c.key for c in store.cells()], len(store.predictions("a")))
try:
    store.put_cell(CellRecord(key="b", strategy="zero_shot", options={}, n_train=0, seed=0, variant="z"), [])
    print("put: ok")
except AdaptlabError as exc:
    print("put:", exc)
"""


def test_read_only_run_directory() -> None:
    base = Path(tempfile.mkdtemp(prefix="adaptlab-ro-"))  # pytest's tmp dirs are private to root
    run = base / "run"
    try:
        with RunStore(run) as store:
            store.put_cell(CellRecord(key="a", strategy="zero_shot", options={}, n_train=0, seed=0,
                                      variant="z", value=0.5), preds("a", 3))
        os.chmod(base, 0o755)
        os.chmod(run / "adaptlab.db", 0o444)
        os.chmod(run, 0o555)
        out = subprocess.run([sys.executable, "-c", READONLY_CHECK, str(run)], env=_env(),
                             capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
        assert lines["create"] == f"{run}: read-only run directory: adaptlab must write adaptlab.db here " \
                                  "(use another --out)"
        assert lines["cells"] == "['a'] 3"
        assert "read-only" in lines["put"] and "Traceback" not in out.stdout + out.stderr
    finally:
        os.chmod(run, 0o755)
        subprocess.run(["rm", "-rf", str(base)], check=True)


HOLD_LOCK = """
import sys, time
from adaptlab.experiment.store import RunStore
store = RunStore(sys.argv[1])
with store.lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_lock_in_process(tmp_path: Path) -> None:
    first, second = RunStore(tmp_path), RunStore(tmp_path)
    with first.lock():
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError) as err, second.lock():
            pass
        assert err.value.pid == os.getpid() and err.value.file == str(tmp_path)
        assert str(err.value) == (f"{tmp_path} is in use by another adaptlab compare (pid {os.getpid()}); "
                                  "wait for it or use another --out")
        assert isinstance(err.value, AdaptlabError)
    with second.lock():  # released on exit
        pass


def test_lock_released_when_holder_is_killed(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        store = RunStore(tmp_path)
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}\\)"), store.lock():
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with store.lock():
            assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


WRITER = """
import sys
from adaptlab.results import CellRecord, PredictionRow
from adaptlab.experiment.store import RunStore
run_dir, prefix, n_cells, n_pred, loop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
store = RunStore(run_dir)
gen = 0
while True:
    for i in range(n_cells):
        key = f"{prefix}{i}"
        count = n_pred + (gen * 37 + i * 11) % n_pred  # every write changes the prediction count
        rec = CellRecord(key=key, strategy="lora", options={"gen": gen}, n_train=16, seed=i,
                         variant="lora", value=gen / 1000, n_test=count)
        rows = [PredictionRow(key, f"ex{j}", "x" * 300, "a", "b", 1.0) for j in range(count)]
        store.put_cell(rec, rows, {"gen": gen})
        print(key, gen, flush=True)
    gen += 1
    if loop != "loop":
        break
"""


def _check_complete(run_dir: Path) -> list[CellRecord]:
    conn = sqlite3.connect(run_dir / "adaptlab.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    store = RunStore(run_dir, create=False)
    cells = store.cells()
    for cell in cells:
        rows = store.predictions(cell.key)
        assert len(rows) == cell.n_test, cell.key
        assert store.metrics_doc(cell.key) == {"gen": cell.options["gen"]}
    store.close()
    return cells


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), prefix, "25", "40", "once"],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for prefix in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    cells = _check_complete(tmp_path)
    assert sorted(c.key for c in cells) == sorted(f"{p}{i}" for p in "ab" for i in range(25))


def test_sigkill_mid_write_leaves_consistent_store(tmp_path: Path) -> None:
    """Kill the writer at varying moments; each cell is always whole (old or new version)."""
    RunStore(tmp_path).close()
    for attempt in range(4):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "c", "6", "1500", "loop"],
                                  env=_env(), stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(3 + attempt):
                assert writer.stdout.readline(), "writer died"
            time.sleep(0.007 * attempt)
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert writer.returncode == -signal.SIGKILL
        cells = _check_complete(tmp_path)
        assert len(cells) >= 3
    with RunStore(tmp_path) as store:  # reopened read-write after the kills: still writable
        store.put_cell(replace(cells[0], value=0.99, n_test=0), [], {"gen": cells[0].options["gen"]})
    assert {c.key: c.value for c in _check_complete(tmp_path)}[cells[0].key] == 0.99


def test_environment_info() -> None:
    import platform

    import numpy

    import adaptlab

    env = environment_info()
    json.dumps(env)  # storable as-is
    assert env["python"] == platform.python_version()
    assert env["packages"]["adaptlab"] == adaptlab.__version__
    assert env["packages"]["numpy"] == numpy.__version__
    assert set(env["packages"]) >= {"torch", "transformers", "peft", "accelerate"}
    assert env["logical_cores"] == os.cpu_count() and 1 <= env["usable_cores"] <= env["logical_cores"]
    assert env["ram_bytes"] > 2**28 and isinstance(env["gpus"], list) and env["cpu"]
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert env["cpu"] in Path("/proc/cpuinfo").read_text()
    host = socket.gethostname()
    if len(host) >= 6:
        assert host not in json.dumps(env)


def test_mlflow_missing_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python does when it is not installed
    with pytest.raises(ConfigError, match=r"^--mlflow needs mlflow: pip install mlflow$"):
        log_cell_mlflow(tmp_path / "mlruns", "exp", full_record())


def test_mlflow_logs_cell(tmp_path: Path) -> None:
    # mlflow-skinny is a test dependency (pyproject's test extras): this test is never skipped for want of it
    from mlflow.tracking import MlflowClient

    rec = full_record()
    run_id = log_cell_mlflow(tmp_path / "mlruns", "demo-exp", rec)
    run = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri()).get_run(run_id)
    assert run.data.params["strategy"] == "few_shot" and run.data.params["n_train"] == "8"
    assert run.data.params["option.k"] == "8" and run.data.tags["adaptlab.cell_key"] == rec.key
    assert run.data.metrics["value"] == rec.value and run.data.metrics["ci_high"] == rec.ci_high
    assert run.data.metrics["train_flops"] == rec.train_flops and run.info.status == "FINISHED"
    failed = replace(rec, key="f" * 64, status="failed", value=math.nan, ci_low=math.nan, ci_high=math.nan)
    again = log_cell_mlflow(tmp_path / "mlruns", "demo-exp", failed)  # same experiment, a new run
    run2 = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri()).get_run(again)
    assert run2.info.experiment_id == run.info.experiment_id and run2.info.status == "FAILED"
    assert "value" not in run2.data.metrics and run2.data.metrics["query_seconds"] == rec.query_seconds
