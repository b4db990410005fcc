"""Run an experiment's grid into a run directory: every cell once, each saved the moment it finishes.

* Splits are carved once (``split_seed``) and ONE seeded test sample is shared by every cell, so
  cells are paired. Training subsets are nested per seed (`adaptlab.data.nested_subsets`) and
  shared across strategies: the cell with ``n_train = n`` and ``seed = s`` trains on the first
  ``n`` examples of seed ``s``'s label-stratified order.
* Prompt cells share one LM (built on the first prompt cell); fine-tuning cells load the model by
  name (the conversion cache makes that cheap) and train from scratch.
* An executor (`adaptlab.experiment.executors`: ``local`` in this process, or ``ray`` tasks in
  parallel) runs each cell through `run_cell`; this process alone writes the store.
* A cell that raises is stored as "failed" with a one-line error and the run goes on; ``resume``
  re-runs failed and missing cells only.
* SIGINT / SIGTERM stop the run at once, except during a store write, which is finished first;
  `run_experiment` then raises `RunInterrupted` (exit code 130 / 143).
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError, ConfigError, ResourceError
from adaptlab.experiment.cells import (CELLS_DIR, CellInputs, cell_dir, disk_full, failed_record, fresh_dir,
                                       run_finetune_cell, run_prompt_cell, to_record)
from adaptlab.experiment.grid import Cell, expand_cells
from adaptlab.results import CellRecord, PredictionRow, Scenario

if TYPE_CHECKING:
    from adaptlab.data import Example
    from adaptlab.experiment.config import ExperimentConfig
    from adaptlab.lm.base import LM
    from adaptlab.store import RunStore

log = logging.getLogger(__name__)

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class RunInterrupted(AdaptlabError):
    """The run stopped on SIGINT/SIGTERM after finishing any store write; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, saved: int) -> None:
        self.signum, self.saved, self.exit_code = signum, saved, 128 + signum
        super().__init__(f"interrupted: {saved} cells saved; resume with --resume")


class _Stop(BaseException):
    """Raised by the signal handler; a BaseException so a cell's ``except Exception`` cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM handlers for the run: stop at once outside `critical` sections, else right after."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0
        self._raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
                self._old[sig] = signal.signal(sig, self._handle)
        else:
            log.warning("not on the main thread: Ctrl-C/SIGTERM handling is left to the caller")
        return self

    def reinstall(self) -> None:
        """Take the signals back after a library replaced the handlers (``ray.init`` sets its own)."""
        if self._old and threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
                signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self._depth == 0:
            self.check()

    def check(self) -> None:
        """Raise `_Stop` (once) if a signal arrived."""
        if self.signum is not None and not self._raised:
            self._raised = True
            raise _Stop(self.signum)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section a signal never interrupts (the store write); a pending stop is raised after it."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.check()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def prepare(cfg: ExperimentConfig) -> tuple[CellInputs, list[Cell]]:
    """Load the task and its splits (carved with ``split_seed``), draw the shared test sample and
    expand the grid into cells."""
    from adaptlab.data import check_examples, load_splits
    from adaptlab.prompting.artifact import seeded_sample

    task = cfg.resolve_task()
    splits = load_splits(task, seed=cfg.split_seed)
    test = seeded_sample(splits[cfg.split], cfg.limit, cfg.split_seed)
    if not test:
        raise ConfigError(f"the task has no {cfg.split} examples to evaluate on", file=cfg.file,
                          line=cfg.line_of("split"), field="split")
    for name in ("train", "dev"):  # bad labels fail here, before any model loads, not in every cell
        check_examples(task, splits[name], name)
    check_examples(task, test, cfg.split, unique_ids=True)
    inputs = CellInputs(task=task, train=list(splits.train), dev=list(splits.dev), test=test)
    return inputs, expand_cells(cfg, len(inputs.train))


class _Resources:
    """What cells share, built on first use: the prompt LM, embedders, per-seed training orders."""

    def __init__(self, cfg: ExperimentConfig, inputs: CellInputs) -> None:
        self.cfg, self.inputs = cfg, inputs
        self._lm: LM | None = None
        self._lm_error: BaseException | None = None
        self._orders: dict[int, list[Example]] = {}
        self._embedders: dict[str, Any] = {}

    def lm(self) -> LM:
        if self._lm_error is not None:
            raise self._lm_error
        if self._lm is None:
            from adaptlab.lm.factory import build_lm

            c = self.cfg
            try:
                self._lm = build_lm(c.model, backend=c.backend, dtype=c.dtype, device=c.device,
                                    base_url=c.base_url, api_key_env=c.api_key_env,
                                    api_options=c.api.model_dump() if c.backend == "api" else None)
            except Exception as exc:  # every prompt cell fails the same way; load once
                self._lm_error = exc
                raise
        return self._lm

    def embedder(self, name: str) -> Any:
        if name not in self._embedders:
            from adaptlab.embeddings import load_embedder

            self._embedders[name] = load_embedder(name)
        return self._embedders[name]

    def train(self, cell: Cell) -> list[Example]:
        """The cell's nested training subset: the first n_train of its seed's stratified order."""
        if cell.seed not in self._orders:
            from adaptlab.data import nested_subsets

            task = self.inputs.task
            label_of = task.label_of if task.type == "classification" else None
            self._orders[cell.seed] = nested_subsets(self.inputs.train, ["all"], seed=cell.seed,
                                                     label_of=label_of)["all"]
        return self._orders[cell.seed][:cell.n_train]


def _run_cell(cell: Cell, cfg: ExperimentConfig, res: _Resources,
              run_dir: Path) -> tuple[CellRecord, list[PredictionRow], dict | None]:
    from adaptlab.costs import reset_peak_memory

    out = fresh_dir(cell_dir(run_dir, cell))
    train = res.train(cell)
    reset_peak_memory()  # the cell's own peak, not one inherited from earlier cells of this process
    if cell.family == "prompt":
        result = run_prompt_cell(cell, cfg, res.inputs, train, res.lm(), out, embedder=res.embedder)
    else:
        result = run_finetune_cell(cell, cfg, res.inputs, train, out, embedder=res.embedder)
    return to_record(cell, result, f"{CELLS_DIR}/{cell.short_key}")


@dataclass
class CellOutcome:
    """A finished cell as the store takes it: its record (done or failed), rows and metrics doc."""

    cell: Cell
    record: CellRecord
    rows: list[PredictionRow]
    doc: dict | None
    started_at: str
    seconds: float


def run_cell(cell: Cell, cfg: ExperimentConfig, res: _Resources, run_dir: Path) -> CellOutcome:
    """Run one cell (every executor calls this, in whichever process runs the cell). A cell that
    raises becomes a "failed" record with a one-line error and its folder is removed."""
    started, t0 = _now(), time.perf_counter()
    try:
        rec, rows, doc = _run_cell(cell, cfg, res, run_dir)
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded and the run goes on
        log.debug("cell %s failed", cell.short_key, exc_info=True)
        if disk_full(exc):  # every later cell would fail too: stop, keeping what is saved
            shutil.rmtree(cell_dir(run_dir, cell), ignore_errors=True)
            raise ResourceError(f"no space left on device while running cell {cell.describe()}", file=run_dir,
                                hint="free some space, then rerun with --resume; finished cells are kept") from exc
        rec, rows, doc = failed_record(cell, exc, res.inputs.task.metric), [], None
        log.warning("cell %s failed: %s", cell.describe(), rec.error)
        shutil.rmtree(cell_dir(run_dir, cell), ignore_errors=True)
    return CellOutcome(cell, rec, rows, doc, started, time.perf_counter() - t0)


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not (enabled and console.is_terminal), transient=False)


def _log_mlflow(run_dir: Path, cfg: ExperimentConfig, rec: CellRecord) -> None:
    from adaptlab.store import log_cell_mlflow

    try:
        log_cell_mlflow(run_dir / "mlruns", cfg.name, rec)
    except AdaptlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - tracking must never lose the run
        log.warning("MLflow logging of cell %s failed: %s", rec.key[:12], exc)


def _execute(cfg: ExperimentConfig, inputs: CellInputs, cells: list[Cell], run_dir: Path, store: RunStore,
             sig: _Signals, *, resume: bool, progress: bool, mlflow: bool) -> list[CellRecord]:
    from adaptlab.store import environment_info

    stored = store.cells()
    if stored and not resume:
        raise ConfigError(f"already holds {len(stored)} cells of a compare run", file=run_dir,
                          hint="pass --resume to continue it, or choose another --out")
    if mlflow:
        try:
            import mlflow as _mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("--mlflow needs mlflow", hint="pip install 'adaptlab[mlflow]'") from None
    from adaptlab.experiment.executors import get_executor

    executor = get_executor(cfg.executor)  # a missing optional dependency fails before any cell runs
    config = cfg.to_dict()
    config["resolved"] = {"task": inputs.task.name, "metric": inputs.task.metric, "n_train_all": len(inputs.train),
                          "n_dev": len(inputs.dev), "n_test": len(inputs.test), "cells": [c.key for c in cells]}
    with sig.critical():
        store.save_experiment(config, environment_info())
    done = store.done_keys()
    planned = {c.key for c in cells}
    foreign = [c for c in stored if c.key not in planned]
    if foreign:
        log.warning("%d stored cells are not part of this experiment (its config changed); they are kept",
                    len(foreign))
    todo = [c for c in cells if c.key not in done]
    log.info("%s: %d cells, %d done, %d to run", cfg.name, len(cells), len(cells) - len(todo), len(todo))
    with _progress(progress) as bar:
        task_id = bar.add_task(cfg.name, total=len(cells), completed=len(cells) - len(todo))
        saved = 0

        def started(cell: Cell) -> None:
            bar.update(task_id, description=f"{cell.describe()}")

        def finished(out: CellOutcome) -> None:  # the only store writer, on the driver (SQLite: one writer)
            nonlocal saved
            rec = out.record
            with sig.critical():
                store.put_cell(rec, out.rows, out.doc, started_at=out.started_at)
            saved += 1
            log.info("[%d/%d] %s: %s %.4f (%.1f s)", saved, len(todo), out.cell.describe(), rec.metric, rec.value,
                     out.seconds)
            if mlflow:
                _log_mlflow(run_dir, cfg, rec)
            bar.advance(task_id)

        executor.run(cfg, inputs, todo, run_dir, sig, on_start=started, on_done=finished)
        bar.update(task_id, description=f"{cfg.name}: done")
    by_key = {c.key: c for c in store.cells()}
    return [by_key[c.key] for c in cells if c.key in by_key]


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                   mlflow: bool = False) -> list[CellRecord]:
    """Run the missing cells of ``cfg`` into ``run_dir`` (see the module docstring); returns the records
    of the experiment's cells in grid order. Raises `RunLockedError` when another compare holds the
    directory, `ConfigError` when it already holds cells and ``resume`` is False, and `RunInterrupted`
    on SIGINT/SIGTERM."""
    from adaptlab.store import RunStore

    run_dir = Path(run_dir)
    with _Signals() as sig:
        store: RunStore | None = None
        try:
            inputs, cells = prepare(cfg)  # bad data or sizes fail before the run folder is created
            store = RunStore(run_dir)
            with store.lock():
                try:
                    return _execute(cfg, inputs, cells, run_dir, store, sig, resume=resume, progress=progress,
                                    mlflow=mlflow)
                except _Stop as stop:
                    saved = len(store.done_keys())
                    raise RunInterrupted(stop.signum, saved) from None
        except _Stop as stop:  # while loading the data, opening the store or locking it
            raise RunInterrupted(stop.signum, 0) from None
        finally:
            if store is not None:
                store.close()


# -- summary -----------------------------------------------------------------------------------

@dataclass
class SummaryRow:
    """One variant at one n_train, over its seeds (what `adaptlab compare` prints)."""

    variant: str
    strategy: str
    family: str
    n_train: int
    seeds: int
    failed: int
    metric: str
    mean: float
    std: float
    train_seconds: float
    train_dollars: float
    query_seconds: float
    dollars_per_1k: float


def summarize(cells: list[CellRecord], scenario: Scenario) -> list[SummaryRow]:
    """Rows per (variant, n_train) in first-seen order: mean and sample std over ok seeds, mean costs
    (per query as ``scenario`` serves it, `CellRecord.served`)."""
    groups: dict[tuple[str, int], list[CellRecord]] = {}
    for c in (c.served(scenario) for c in cells):
        groups.setdefault((c.variant, c.n_train), []).append(c)
    rows = []
    for (variant, n), group in groups.items():
        ok = [c for c in group if c.ok]
        values = [c.value for c in ok]

        def mean(xs: list[float]) -> float:
            return float(statistics.fmean(xs)) if xs else math.nan

        rows.append(SummaryRow(
            variant=variant, strategy=group[0].strategy, family=group[0].family, n_train=n, seeds=len(ok),
            failed=len(group) - len(ok), metric=group[0].metric, mean=mean(values),
            std=statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan),
            train_seconds=mean([c.train_seconds for c in ok]),
            train_dollars=mean([c.train_cost(scenario) for c in ok]),
            query_seconds=mean([c.query_seconds for c in ok]),
            dollars_per_1k=mean([1000 * c.query_cost(scenario) for c in ok])))
    return rows
