"""Executing one cell in whichever process runs it (this one, or a Ray worker): the run's shared resources
(`RunResources`), and `run_cell`, which turns a cell into a `CellOutcome` (a failed cell is an outcome too)."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adaptlab.data.example import Example
from adaptlab.data.splits import nested_subsets
from adaptlab.errors import ResourceError
from adaptlab.experiment.cells import (CELLS_DIR, CellInputs, cell_dir, disk_full, failed_record, fresh_dir,
                                       run_grid_cell, to_record)
from adaptlab.experiment.config import ExperimentConfig
from adaptlab.experiment.grid import Cell
from adaptlab.experiment.plugins import load_plugins
from adaptlab.lm.pool import DEFAULT_ROLE, ModelPool
from adaptlab.models.costs import reset_peak_memory
from adaptlab.results import CellRecord, PredictionRow

log = logging.getLogger(__name__)


def now() -> str:
    """The current UTC time (ISO 8601, milliseconds) for cell timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RunResources:
    """What the cells of a run share, built on first use in the process that runs them: the models (one scoring
    LM per role, embedders) and the per-seed training orders. A Ray worker builds its own and keeps it for its
    next cell of the same run. The experiment's plugins are imported here too (a worker process needs them)."""

    def __init__(self, cfg: ExperimentConfig, inputs: CellInputs) -> None:
        self.cfg, self.inputs = cfg, inputs
        load_plugins(cfg.plugins, cfg.source.parent if cfg.source else None)
        self.models = ModelPool({DEFAULT_ROLE: cfg.model_spec()})
        self._orders: dict[int, list[Example]] = {}

    def train(self, cell: Cell) -> list[Example]:
        """The cell's nested training subset: the first n_train of its seed's stratified order."""
        if cell.seed not in self._orders:
            task = self.inputs.task
            label_of = task.label_of if task.type == "classification" else None
            self._orders[cell.seed] = nested_subsets(self.inputs.train, ["all"], seed=cell.seed,
                                                     label_of=label_of)["all"]
        return self._orders[cell.seed][:cell.n_train]


@dataclass
class CellOutcome:
    """A finished cell as the store takes it: its record (done or failed), rows and metrics doc."""

    cell: Cell
    record: CellRecord
    rows: list[PredictionRow]
    doc: dict | None
    started_at: str
    seconds: float


def _run(cell: Cell, res: RunResources, run_dir: Path) -> tuple[CellRecord, list[PredictionRow], dict | None]:
    out = fresh_dir(cell_dir(run_dir, cell))
    train = res.train(cell)
    reset_peak_memory()  # the cell's own peak, not one inherited from earlier cells of this process
    result = run_grid_cell(cell, res.inputs, train, res.models, out, res.cfg.split)
    return to_record(cell, result, f"{CELLS_DIR}/{cell.short_key}")


def run_cell(cell: Cell, res: RunResources, run_dir: Path) -> CellOutcome:
    """Run one cell (every executor calls this, in whichever process runs the cell). A cell that raises becomes a
    "failed" record with a one-line error and its folder is removed; a full disk stops the run instead."""
    started, t0 = now(), time.perf_counter()
    try:
        rec, rows, doc = _run(cell, res, run_dir)
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
