"""The run store: one SQLite database per compare run (``RUN_DIR/adaptlab.db``).

It holds the experiment config, the environment it ran on, every cell's metrics (with CI and
costs), its metrics.json document and its per-example predictions. Each cell is written in ONE
``BEGIN IMMEDIATE`` transaction (old row and its predictions deleted, new ones inserted), so a
process killed at any moment leaves either the old or the new state, never half a cell.

Settings: ``journal_mode=WAL`` (readers never block the writer; a killed writer's committed
transactions survive), ``synchronous=FULL`` (one fsync per commit; commits are one per cell, each
costing seconds to hours of compute, so the fsync is free and a power cut cannot drop a finished
cell), ``foreign_keys=ON`` (predictions cascade with their cell) and a 30 s busy timeout.

`RunStore.lock` keeps a second ``adaptlab compare`` out of a run directory: an ``flock`` on
``RUN_DIR/.lock`` that the kernel releases when the holder exits, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import platform
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.files import json_default
from adaptlab.results import CellRecord, PredictionRow, family_of

log = logging.getLogger(__name__)

DB_NAME = "adaptlab.db"
LOCK_NAME = ".lock"
SCHEMA_VERSION = 3
"""2: cells record their strategy's family (a plugin's strategy is not in every process's registry).
3: cells record the labels they used (``labels_used``: training + dev labels; NULL in older runs)."""
BUSY_TIMEOUT_S = 30.0

# CellRecord fields by how they are stored. Floats: NaN is stored as NULL (SQLite has no NaN)
# and read back as NaN. Optional ints: NULL is None. JSON: dicts as TEXT.
_TEXT = ("key", "strategy", "variant", "status", "error", "metric", "artifact_dir", "family")
_INT = ("n_train", "seed", "n_test")
_OPT_INT = ("peak_memory_bytes", "trainable_params", "artifact_bytes", "labels_used")
_FLOAT = ("value", "ci_low", "ci_high", "train_seconds", "train_flops", "query_prompt_tokens",
          "query_flops", "query_seconds")
_JSON = ("options", "report", "extra")
_RECORD_COLUMNS = _TEXT + _INT + _OPT_INT + _FLOAT + _JSON
_CELL_COLUMNS = _RECORD_COLUMNS + ("metrics", "started_at", "finished_at")
assert set(_RECORD_COLUMNS) == {f.name for f in fields(CellRecord)}, "store schema out of date"
_ADDED_IN = {"family": (2, "''"), "labels_used": (3, "NULL")}  # column: (schema adding it, what older ones read)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE experiment (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    config TEXT NOT NULL, environment TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE cells (
    key TEXT PRIMARY KEY, strategy TEXT NOT NULL, variant TEXT NOT NULL,
    n_train INTEGER NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')), error TEXT,
    metric TEXT NOT NULL, value REAL, ci_low REAL, ci_high REAL, n_test INTEGER NOT NULL,
    train_seconds REAL, train_flops REAL, peak_memory_bytes INTEGER, trainable_params INTEGER,
    artifact_bytes INTEGER, query_prompt_tokens REAL, query_flops REAL, query_seconds REAL,
    options TEXT NOT NULL, report TEXT NOT NULL, extra TEXT NOT NULL, metrics TEXT,
    artifact_dir TEXT, started_at TEXT, finished_at TEXT NOT NULL, family TEXT, labels_used INTEGER);
CREATE INDEX cells_status ON cells (status);
CREATE INDEX cells_order ON cells (strategy, variant, n_train, seed);
CREATE TABLE predictions (
    cell TEXT NOT NULL REFERENCES cells (key) ON DELETE CASCADE,
    idx INTEGER NOT NULL, example_id TEXT NOT NULL,
    input TEXT NOT NULL, gold TEXT NOT NULL, pred TEXT NOT NULL, score REAL,
    PRIMARY KEY (cell, idx));
"""


class RunLockedError(AdaptlabError):
    """Another process (another ``adaptlab compare``) holds the run directory's lock."""

    def __init__(self, run_dir: str | Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"in use by another adaptlab compare ({who})", file=run_dir,
                         hint="wait for it or use another --out")

    def one_line(self) -> str:
        return f"{self.file} is {self.message}; {self.hint}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default, ensure_ascii=False)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _dumps(value)


def _float(value: Any) -> float | None:
    """A float for a REAL column; NaN (and None) become NULL (SQLite has no NaN)."""
    return None if value is None or math.isnan(float(value)) else float(value)


class RunStore:
    """Read and write one run directory's ``adaptlab.db``.

    ``create=True`` (compare) creates the directory and database and needs them writable;
    ``create=False`` (report, recommend) needs an existing run and opens a read-only directory
    read-only. Errors from SQLite or the file system surface as one-line `AdaptlabError`\\ s.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.db_path = self.run_dir / DB_NAME
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise AdaptlabError("not a directory", file=self.run_dir, hint="use another --out")
        if not create and not self.db_path.is_file():
            raise AdaptlabError(f"no adaptlab run in {self.run_dir}",
                                hint="run `adaptlab compare EXP.yaml --out DIR` first")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AdaptlabError(f"cannot create run directory: {exc.strerror}", file=self.run_dir) from exc
        writable = os.access(self.run_dir, os.W_OK) and (
            not self.db_path.exists() or os.access(self.db_path, os.W_OK))
        if create and not writable:
            raise AdaptlabError("read-only run directory: adaptlab must write adaptlab.db here",
                                file=self.run_dir, hint="use another --out")
        self.readonly = not writable
        self._conn: sqlite3.Connection | None = None
        with self._guard("open the run database"):
            self._conn = self._connect_ro() if self.readonly else self._connect_rw()
            try:
                self._init_schema()
            except BaseException:
                self.close()
                raise

    # -- connection -----------------------------------------------------------------------
    def _connect_rw(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: WAL journal unavailable (got %s)", self.db_path, mode)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_ro(self) -> sqlite3.Connection:
        """Read-only: ``mode=ro`` needs to create the WAL index, so fall back to ``immutable``."""
        uri = self.db_path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        wal = self.db_path.with_name(DB_NAME + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            log.warning("%s: read-only directory with an unmerged WAL file; its last writes are not "
                        "visible", self.db_path)
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def _init_schema(self) -> None:
        conn = self._db
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and not self.readonly:
            with self._transaction():
                if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.schema_version = SCHEMA_VERSION
            return
        if "meta" not in tables or "cells" not in tables:
            raise AdaptlabError("not an adaptlab run database", file=self.db_path,
                                hint="move it away or use another --out")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION or version < 1:
            raise AdaptlabError(f"run database schema {version} was written by {'a newer' if version else 'an older'} "
                                f"adaptlab (this one reads schemas 1 to {SCHEMA_VERSION})", file=self.db_path)
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate(version)
            version = SCHEMA_VERSION
        self.schema_version = version

    def _migrate(self, version: int) -> None:
        """Bring an older run database up to `SCHEMA_VERSION` in one transaction (the version is recorded)."""
        conn = self._db
        with self._guard("migrate the run database"), self._transaction():
            if version < 2:  # cells record their family; old runs hold built-in strategies only
                conn.execute("ALTER TABLE cells ADD COLUMN family TEXT")
                for (strategy,) in conn.execute("SELECT DISTINCT strategy FROM cells").fetchall():
                    conn.execute("UPDATE cells SET family = ? WHERE strategy = ?", (family_of(strategy), strategy))
            if version < 3:  # labels used: unknown for old cells (NULL: `CellRecord.labels` falls back to n_train)
                conn.execute("ALTER TABLE cells ADD COLUMN labels_used INTEGER")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        log.info("%s: migrated the run database from schema %d to %d", self.db_path, version, SCHEMA_VERSION)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AdaptlabError("run store is closed", file=self.db_path)
        return self._conn

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn SQLite's operational/corruption errors into one-line AdaptlabErrors."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise  # a bug in the caller, not the user's environment
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "readonly" in text or "read-only" in text:
                hint = "the run directory is read-only; copy it somewhere writable"
            elif "not a database" in text or "malformed" in text:
                hint = "adaptlab.db is corrupt or not an adaptlab database; move it away or use another --out"
            elif "locked" in text or "busy" in text:
                hint = "another process is writing this run"
            else:
                hint = None
            raise AdaptlabError(f"cannot {action}: {text}", file=self.db_path, hint=hint) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connection (the last one to close merges the WAL into the database)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lock -------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``RUN_DIR/.lock`` exclusively (non-blocking; `RunLockedError` when taken).

        The file holds the holder's pid for the message; the kernel drops the lock when the
        holder's process ends, even by SIGKILL.
        """
        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AdaptlabError(f"cannot create the run lock: {exc.strerror}", file=path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise RunLockedError(self.run_dir, int(text) if text.isdigit() else None) from None
        except OSError as exc:
            os.close(fd)
            raise AdaptlabError(f"cannot lock the run directory: {exc.strerror}", file=path) from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- experiment -------------------------------------------------------------------------
    def save_experiment(self, config: dict[str, Any], environment: dict[str, Any]) -> None:
        """Store (or replace) the experiment config and environment; keeps the creation time."""
        now = _now()
        with self._guard("save the experiment"), self._transaction() as conn:
            conn.execute(
                "INSERT INTO experiment VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "config = excluded.config, environment = excluded.environment, "
                "updated_at = excluded.updated_at",
                (_dumps(config), _dumps(environment), now, now))

    def _experiment_column(self, column: str) -> dict[str, Any] | None:
        with self._guard("read the experiment"):
            row = self._db.execute(f"SELECT {column} FROM experiment WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None

    def experiment(self) -> dict[str, Any] | None:
        """The experiment config as saved, or None before `save_experiment`."""
        return self._experiment_column("config")

    def environment(self) -> dict[str, Any] | None:
        """The environment (`environment_info`) as saved, or None."""
        return self._experiment_column("environment")

    def timestamps(self) -> tuple[str, str] | None:
        """(created_at, updated_at) of the experiment row as ISO-8601 UTC, or None."""
        with self._guard("read the experiment"):
            row = self._db.execute("SELECT created_at, updated_at FROM experiment WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else None

    # -- cells ------------------------------------------------------------------------------
    def put_cell(self, rec: CellRecord, predictions: Sequence[PredictionRow],
                 metrics: dict[str, Any] | None = None, *, started_at: str | None = None) -> None:
        """Write one cell, replacing any earlier row for its key and its predictions, atomically.

        ``metrics`` is the cell's metrics.json document (a top-level ``predictions`` list is
        dropped: those live in the predictions table). ``started_at``: ISO time the cell began.
        """
        if rec.status not in ("done", "failed"):
            raise ValueError(f"cell status must be 'done' or 'failed', got {rec.status!r}")
        bad = next((p for p in predictions if p.cell and p.cell != rec.key), None)
        if bad is not None:
            raise ValueError(f"prediction for cell {bad.cell!r} passed with cell {rec.key!r}")
        doc = None if metrics is None else _dumps({k: v for k, v in metrics.items() if k != "predictions"})
        values: dict[str, Any] = {name: getattr(rec, name) for name in _TEXT}
        values.update({name: int(getattr(rec, name)) for name in _INT})
        values.update({name: None if getattr(rec, name) is None else int(getattr(rec, name))
                       for name in _OPT_INT})
        values.update({name: _float(getattr(rec, name)) for name in _FLOAT})
        values.update({name: _dumps(getattr(rec, name) or {}) for name in _JSON})
        values.update(metrics=doc, started_at=started_at, finished_at=_now())
        rows = [(rec.key, i, str(p.example_id), _text(p.input), _text(p.gold), _text(p.pred), _float(p.score))
                for i, p in enumerate(predictions)]
        marks = ", ".join("?" * len(_CELL_COLUMNS))
        with self._guard(f"write cell {rec.key[:12]}"), self._transaction() as conn:
            conn.execute("DELETE FROM cells WHERE key = ?", (rec.key,))  # cascades to predictions
            conn.execute(f"INSERT INTO cells ({', '.join(_CELL_COLUMNS)}) VALUES ({marks})",
                         [values[c] for c in _CELL_COLUMNS])
            conn.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def done_keys(self) -> set[str]:
        """Keys of the cells that finished (status "done"); failed cells are re-run on resume."""
        with self._guard("read cells"):
            return {r[0] for r in self._db.execute("SELECT key FROM cells WHERE status = 'done'")}

    def cells(self, *, include_failed: bool = True) -> list[CellRecord]:
        """Every stored cell as a `CellRecord`, ordered by strategy, variant, n_train, seed."""
        where = "" if include_failed else "WHERE status = 'done'"
        columns = [c if self.schema_version >= _ADDED_IN.get(c, (1, ""))[0] else f"{_ADDED_IN[c][1]} AS {c}"
                   for c in _RECORD_COLUMNS]  # a read-only older database lacks later columns
        sql = (f"SELECT {', '.join(columns)} FROM cells {where} "
               "ORDER BY strategy, variant, n_train, seed, key")
        with self._guard("read cells"):
            rows = self._db.execute(sql).fetchall()
        out = []
        for row in rows:
            data = dict(zip(_RECORD_COLUMNS, row))
            for name in _FLOAT:
                data[name] = math.nan if data[name] is None else float(data[name])
            for name in _JSON:
                data[name] = json.loads(data[name])
            out.append(CellRecord(**data))
        return out

    def predictions(self, key: str) -> list[PredictionRow]:
        """The cell's per-example predictions in evaluation order (empty for an unknown key)."""
        with self._guard("read predictions"):
            rows = self._db.execute(
                "SELECT example_id, input, gold, pred, score FROM predictions WHERE cell = ? ORDER BY idx",
                (key,)).fetchall()
        return [PredictionRow(key, e, i, g, p, math.nan if s is None else s) for e, i, g, p, s in rows]

    def metrics_doc(self, key: str) -> dict[str, Any] | None:
        """The cell's metrics.json document (without predictions), or None."""
        with self._guard("read cells"):
            row = self._db.execute("SELECT metrics FROM cells WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None


# -- environment ------------------------------------------------------------------------------
_PACKAGES = ("adaptlab", "torch", "transformers", "peft", "accelerate", "numpy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def _gpus() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return ["Apple MPS"]
    except Exception as exc:  # noqa: BLE001 - environment info is best effort
        log.debug("GPU probe failed: %s", exc)
    return []


def environment_info() -> dict[str, Any]:
    """Where a run ran: versions, OS, CPU, cores, RAM and GPUs (no hostname or user names)."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_bytes": _ram_bytes(),
        "gpus": _gpus(),
        "timestamp": _now(),
    }


# -- MLflow -----------------------------------------------------------------------------------
def log_cell_mlflow(tracking_dir: str | Path, experiment_name: str, rec: CellRecord) -> str:
    """Log one cell as an MLflow run in the local file store at ``tracking_dir``; returns the run id.

    Params: strategy, variant, n_train, seed, metric and each option (``option.<name>``).
    Metrics: value, ci_low, ci_high, n_test and the cost fields (NaN/None skipped). A re-run cell
    (e.g. failed, then resumed) is a new MLflow run; the tag ``adaptlab.cell_key`` links them.
    """
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError("--mlflow needs mlflow: pip install mlflow") from exc
    import time

    # MLflow >= 3.7 refuses the file store unless asked for explicitly; older versions ignore this.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    directory = Path(tracking_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=directory.as_uri())
    found = client.get_experiment_by_name(experiment_name)
    exp_id = found.experiment_id if found is not None else client.create_experiment(experiment_name)
    run = client.create_run(exp_id, run_name=f"{rec.variant} n={rec.n_train} seed={rec.seed}",
                            tags={"adaptlab.cell_key": rec.key, "adaptlab.family": rec.family,
                                  "adaptlab.status": rec.status})
    params = {"strategy": rec.strategy, "variant": rec.variant, "n_train": rec.n_train,
              "seed": rec.seed, "metric": rec.metric}
    params.update({f"option.{k}": _text(v) for k, v in sorted(rec.options.items())})
    stamp = int(time.time() * 1000)
    names = ("value", "ci_low", "ci_high", "n_test", "train_seconds", "train_flops", "query_prompt_tokens",
             "query_flops", "query_seconds") + _OPT_INT
    numbers = {name: getattr(rec, name) for name in names}
    metrics = [Metric(name, float(v), stamp, 0) for name, v in numbers.items()
               if v is not None and not math.isnan(float(v))]
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(k, str(v)[:500]) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FINISHED" if rec.status == "done" else "FAILED")
    return run.info.run_id
