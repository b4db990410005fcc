"""Executing one cell in whichever process runs it (this one, or a Ray worker): the run's shared resources
(`RunResources`), and `run_cell`, which turns a cell into a `CellOutcome` (a failed cell is an outcome too).

A cell's peak memory is its own (`adaptlab.models.costs.cell_peak`): the growth of the process's memory over the
cell plus the shared models it used (`ModelPool.track`) that earlier cells had loaded; an embedding-probe cell
run after prompt cells does not report their LLM. ``metrics.json`` and the model card carry it
(``peak_memory_bytes``, ``peak_memory_kind``, ``models_held_bytes``, and the process's ``peak_process_rss_bytes``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adaptlab.data.example import Example
from adaptlab.data.splits import nested_subsets
from adaptlab.errors import ResourceError
from adaptlab.evaluate import EvalResult
from adaptlab.experiment.cells import (CACHE_DIR, CELLS_DIR, CellInputs, GridCellRun, cell_dir, disk_full, failed_record,
                                       fresh_dir, run_grid_cell, to_record)
from adaptlab.experiment.config import ExperimentConfig
from adaptlab.experiment.grid import Cell
from adaptlab.experiment.plugins import load_plugins
from adaptlab.lm.pool import ModelPool
from adaptlab.models.costs import MemoryWindow, cell_peak
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
        self.models = ModelPool(cfg.model_specs())
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
    window = MemoryWindow.open()  # the cell's own peak, not one inherited from earlier cells of this process
    with res.models.track() as used:

        def peak(result: EvalResult) -> Mapping[str, Any]:
            cuda = result.cost["train"].get("peak_memory_kind") == "cuda_max_allocated"  # the fit ran on a GPU
            return cell_peak(window, lambda device: res.models.held_bytes(used, device), cuda=cuda)

        run = GridCellRun(out, res.cfg.split, res.cfg.evaluation.settings(), peak, cache_dir=run_dir / CACHE_DIR,
                          hardware=res.cfg.model_spec(cell.role).hardware_price())
        result = run_grid_cell(cell, res.inputs, train, res.models, run)
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
