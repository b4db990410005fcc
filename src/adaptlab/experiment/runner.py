"""Run an experiment's grid into a run directory: every cell once, each saved the moment it finishes.

* Splits are carved once (``split_seed``) and ONE seeded test sample is shared by every cell, so
  cells are paired. Training subsets are nested per seed (`adaptlab.data.nested_subsets`) and
  shared across strategies: the cell with ``n_train = n`` and ``seed = s`` trains on the first
  ``n`` examples of seed ``s``'s label-stratified order.
* Every cell runs through the same path (`adaptlab.experiment.cells`): its strategy's config fits, the
  artifact saves itself, the evaluator scores it. Cells share the run's models (`ModelPool`: one scoring LM,
  embedders); fine-tuning cells train a fresh copy of the model.
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
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.example import seeded_sample
from adaptlab.data.splits import check_examples, load_splits
from adaptlab.data.validate import check_templates
from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.experiment.cells import CellInputs
from adaptlab.experiment.config import ExperimentConfig
from adaptlab.experiment.execution import CellOutcome
from adaptlab.experiment.executors import get_executor
from adaptlab.experiment.grid import Cell, expand_cells
from adaptlab.experiment.signals import RunInterrupted, RunSignals, StopRun
from adaptlab.experiment.store import RunStore, environment_info, log_cell_mlflow
from adaptlab.results import CellRecord, Scenario

log = logging.getLogger(__name__)


def prepare(cfg: ExperimentConfig) -> tuple[CellInputs, list[Cell]]:
    """Load the task and its splits (carved with ``split_seed``), draw the shared test sample and
    expand the grid into cells."""
    task = cfg.resolve_task()
    splits = load_splits(task, seed=cfg.split_seed)
    test = seeded_sample(splits[cfg.split], cfg.limit, cfg.split_seed)
    if not test:
        raise ConfigError(f"the task has no {cfg.split} examples to evaluate on", file=cfg.file,
                          line=cfg.line_of("split"), field="split")
    for name in ("train", "dev"):  # bad labels fail here, before any model loads, not in every cell
        check_examples(task, splits[name], name)
    check_examples(task, test, cfg.split, unique_ids=True)
    check_templates(task, {"train": splits.train, "dev": splits.dev, cfg.split: test})
    inputs = CellInputs(task=task, train=list(splits.train), dev=list(splits.dev), test=test)
    return inputs, expand_cells(cfg, len(inputs.train))


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    console = Console(stderr=True)
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=not (enabled and console.is_terminal), transient=False)


def _log_mlflow(run_dir: Path, cfg: ExperimentConfig, rec: CellRecord) -> None:
    try:
        log_cell_mlflow(run_dir / "mlruns", cfg.name, rec)
    except AdaptlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - tracking must never lose the run
        log.warning("MLflow logging of cell %s failed: %s", rec.key[:12], exc)


def _execute(cfg: ExperimentConfig, inputs: CellInputs, cells: list[Cell], run_dir: Path, store: RunStore,
             sig: RunSignals, options: RunOptions) -> list[CellRecord]:
    resume, progress, mlflow = options.resume, options.progress, options.mlflow
    stored = store.cells()
    if stored and not resume:
        raise ConfigError(f"already holds {len(stored)} cells of a compare run", file=run_dir,
                          hint="pass --resume to continue it, or choose another --out")
    if mlflow:
        try:
            import mlflow as _mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("--mlflow needs mlflow", hint="pip install 'adaptlab[mlflow]'") from None
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


@dataclass(frozen=True)
class RunOptions:
    """How a compare run runs (none of it changes a result)."""

    resume: bool = False
    """Continue the run in the folder: finished cells are kept."""
    progress: bool = True
    """Show a progress bar with ETA (terminals only)."""
    mlflow: bool = False
    """Also log every cell to MLflow (RUN_DIR/mlruns)."""


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                   mlflow: bool = False) -> list[CellRecord]:
    """Run the missing cells of ``cfg`` into ``run_dir`` (see the module docstring); returns the records
    of the experiment's cells in grid order. Raises `RunLockedError` when another compare holds the
    directory, `ConfigError` when it already holds cells and ``resume`` is False, and `RunInterrupted`
    on SIGINT/SIGTERM."""
    run_dir = Path(run_dir)
    options = RunOptions(resume=resume, progress=progress, mlflow=mlflow)
    with RunSignals() as sig:
        store: RunStore | None = None
        try:
            inputs, cells = prepare(cfg)  # bad data or sizes fail before the run folder is created
            store = RunStore(run_dir)
            with store.lock():
                try:
                    return _execute(cfg, inputs, cells, run_dir, store, sig, options)
                except StopRun as stop:
                    saved = len(store.done_keys())
                    raise RunInterrupted(stop.signum, saved) from None
        except StopRun as stop:  # while loading the data, opening the store or locking it
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
