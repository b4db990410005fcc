"""Running one grid cell, whatever its strategy: fit, save, evaluate, and the store's records of it.

One path for every strategy: the registry entry parses the cell's options, ``config.fit(task, train, dev, ctx)``
adapts the model, the artifact saves itself into ``RUN_DIR/cells/<key[:12]>/`` (loadable by ``adaptlab
predict``), and the evaluator scores it on the run's shared test sample. A folder left by a killed run is
deleted first, so a re-run cell starts from scratch and reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import errno
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adaptlab
from adaptlab.data.example import Example
from adaptlab.data.task import Task
from adaptlab.errors import AdaptlabError
from adaptlab.evaluate import EvalResult, EvalSettings, evaluate, save_metrics
from adaptlab.experiment.grid import Cell
from adaptlab.files import dir_bytes
from adaptlab.results import CellRecord, PredictionRow
from adaptlab.experiment.card import write_run_files
from adaptlab.strategies import DEFAULT_ROLE, Adapted, FitContext, ModelPool, NotMainProcess, get_strategy

log = logging.getLogger(__name__)

CELLS_DIR = "cells"
CACHE_DIR = "cache"
"""Work cells of a run share and resumes reuse (a distillation teacher's labels), under the run directory."""
WORK_DIRS = ("checkpoints", "best")
"""Folders a fit writes into its cell folder while it runs (fine-tuning checkpoints); not part of the artifact."""
RUN_FILES = ("metrics.json", "config.json", "README.md", "train_log.jsonl")
"""Files beside the artifact that are not part of it (for its size)."""


@dataclass
class CellInputs:
    """What every cell of a run shares: the task, its carved splits and the one test sample."""

    task: Task
    train: list[Example]
    """The training split after carving (nested subsets are prefixes of a per-seed order of it)."""
    dev: list[Example]
    test: list[Example]
    """The evaluation sample shared by every cell (so cells are paired)."""


@dataclass
class CellWork:
    """One fit-and-evaluate: a strategy with its options on its training examples, in a folder."""

    strategy: str
    options: dict[str, Any]
    train: Sequence[Example]
    seed: int
    out: Path
    split: str = "test"
    resume: bool = False
    progress: bool = False
    keep_checkpoints: bool = False
    """Keep the fit's checkpoints beside the artifact after it finishes."""
    role: str = DEFAULT_ROLE
    """The model role the strategy adapts."""
    cache_dir: Path | None = None
    """The run's folder for work shared between cells (`FitContext.cache_dir`)."""
    hardware: Mapping[str, Any] | None = None
    """The model's own hardware price (`ModelSpec.hardware_price`), recorded with the query cost."""


def artifact_bytes(folder: Path) -> int:
    """Bytes of the artifact in ``folder`` (what `adaptlab predict` loads; work folders and run files excluded)."""
    total = 0
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.name in WORK_DIRS or path.name in RUN_FILES:
            continue
        total += dir_bytes(path) if path.is_dir() else path.stat().st_size
    return total


TrainCostProbe = Callable[[EvalResult], Mapping[str, Any]]
"""Measures a cell from outside the fit once it is evaluated (e.g. its own peak memory); what it returns joins the
train cost before ``metrics.json`` is written."""


def fit_and_evaluate(work: CellWork, inputs: CellInputs, models: ModelPool,
                     settings: EvalSettings = EvalSettings(), probe: TrainCostProbe | None = None) -> EvalResult | None:
    """Fit ``work``'s strategy, save the artifact into ``work.out`` and evaluate it on the shared sample; writes
    ``metrics.json`` beside the artifact. The result is None on the non-main processes of a multi-process
    (``accelerate launch``) fit, which only train."""
    info = get_strategy(work.strategy)
    config = info.parse(work.options)
    ctx = FitContext(models=models, role=work.role, seed=work.seed, work_dir=work.out, resume=work.resume,
                     progress=work.progress, cache_dir=work.cache_dir)
    try:
        adapted = config.fit(inputs.task, list(work.train), inputs.dev, ctx)
    except NotMainProcess:
        return None
    adapted.save(work.out)
    size = artifact_bytes(work.out)
    result = evaluate(adapted, inputs.task, inputs.test, seed=work.seed, split=work.split, progress=work.progress,
                      settings=settings)
    result.cost["train"]["artifact_bytes"] = size
    result.cost["query"]["hardware"] = dict(work.hardware) if work.hardware else None
    result.cost["query"]["model_role"] = work.role
    if probe is not None:
        result.cost["train"].update(probe(result))
    save_metrics(result, work.out)
    write_run_files(work.out, run_config(work, inputs, adapted), result)
    for name in WORK_DIRS if not work.keep_checkpoints else ():
        shutil.rmtree(work.out / name, ignore_errors=True)
    return result


def run_config(work: CellWork, inputs: CellInputs, adapted: Adapted) -> dict[str, Any]:
    """The resolved configuration of one fit (``config.json``)."""
    task = inputs.task
    return {"adaptlab_version": adaptlab.__version__, "task": task.name,
            "task_file": str(task.source) if task.source else None, "model": adapted.model_name,
            "strategy": work.strategy, "family": get_strategy(work.strategy).family, "options": dict(work.options),
            "config": adapted.config, "n_train": len(work.train), "n_dev": len(inputs.dev),
            "n_test": len(inputs.test), "seed": work.seed, "split": work.split}


def cell_dir(run_dir: Path, cell: Cell) -> Path:
    return run_dir / CELLS_DIR / cell.short_key


def fresh_dir(path: Path) -> Path:
    """Delete what a killed run left in ``path`` and create it empty."""
    if path.exists():
        log.info("removing the partial cell folder %s", path)
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@dataclass(frozen=True)
class GridCellRun:
    """How a grid cell is run: its folder, the split it is scored on, the evaluation settings and a train-cost
    probe."""

    out: Path
    split: str = "test"
    settings: EvalSettings = EvalSettings()
    probe: TrainCostProbe | None = None
    cache_dir: Path | None = None
    """The run's shared cache folder (teacher labels)."""
    hardware: Mapping[str, Any] | None = None


def run_grid_cell(cell: Cell, inputs: CellInputs, train: Sequence[Example], models: ModelPool,
                  run: GridCellRun) -> EvalResult:
    """Fit and evaluate one grid cell from scratch (no checkpoint resume) into ``run.out``."""
    work = CellWork(cell.strategy, dict(cell.options), train, cell.seed, run.out, split=run.split, role=cell.role,
                    cache_dir=run.cache_dir, hardware=run.hardware)
    result = fit_and_evaluate(work, inputs, models, run.settings, run.probe)
    if result is None:  # only non-main processes of a multi-process launch return None
        raise RuntimeError("the fit returned no result (not the main process)")
    return result


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def labels_used(labels: Any, n_train: int) -> int:
    """Training + dev labels from an artifact's ``cost()["labels"]`` (``{"train": n, "dev": m}``); ``n_train``
    when the artifact does not count them (a plugin's)."""
    if not isinstance(labels, dict):
        return n_train
    train = labels.get("train")
    return int(_num(train, n_train)) + int(_num(labels.get("dev")))


def to_record(cell: Cell, result: EvalResult, artifact_dir: str) -> tuple[CellRecord, list[PredictionRow], dict]:
    """The store's view of a finished cell: its record, per-example rows and metrics doc (no predictions)."""
    doc = result.to_json()
    doc.pop("predictions", None)
    train = result.cost.get("train", {}) or {}
    query = result.cost.get("query", {}) or {}
    seconds = query.get("latency_p50_s")
    if not isinstance(seconds, (int, float)):
        seconds = query.get("latency_s")
    rec = CellRecord(
        key=cell.key, strategy=cell.strategy, options=dict(cell.options), n_train=cell.n_train, seed=cell.seed,
        variant=cell.variant, status="done", metric=str(result.metric["name"]), value=float(result.metric["value"]),
        ci_low=_num(result.metric.get("ci_low"), math.nan), ci_high=_num(result.metric.get("ci_high"), math.nan),
        n_test=int(result.n), train_seconds=_num(train.get("seconds")), train_flops=_num(train.get("flops")),
        peak_memory_bytes=_opt_int(train.get("peak_memory_bytes")),
        trainable_params=_opt_int(train.get("trainable_params")),
        artifact_bytes=_opt_int(train.get("artifact_bytes")),
        query_prompt_tokens=_num(query.get("prompt_tokens")), query_flops=_num(query.get("flops")),
        query_seconds=_num(seconds), artifact_dir=artifact_dir, report=dict(result.report or {}),
        extra={"cost": result.cost, "search": result.search, "cell": cell.payload, "role": cell.role,
               "arm": get_strategy(cell.strategy).arm},
        family=cell.family,
        labels_used=labels_used(result.cost.get("labels"), cell.n_train))
    rows = [PredictionRow(cell=cell.key, example_id=str(p["id"]), input=str(p.get("input", "")),
                          gold=str(p.get("gold", "")), pred=str(p.get("pred", "")),
                          score=(1.0 if p["correct"] else 0.0) if "correct" in p else float(p.get("score", 0.0)))
             for p in result.predictions]
    return rec, rows, doc


def failed_record(cell: Cell, error: BaseException, metric: str) -> CellRecord:
    """A cell that raised: status "failed" and the error as one line."""
    text = error.one_line() if isinstance(error, AdaptlabError) else f"{type(error).__name__}: {error}"
    line = " ".join(text.split())[:500]
    return CellRecord(key=cell.key, strategy=cell.strategy, options=dict(cell.options), n_train=cell.n_train,
                      seed=cell.seed, variant=cell.variant, status="failed", error=line, metric=metric,
                      extra={"cell": cell.payload}, family=cell.family)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it wraps) is the disk or quota running out. Every later cell would fail
    the same way, so the runner stops the run instead of recording the cell as failed."""
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):  # wrapped (torch, safetensors)
            return True
        exc = exc.__cause__ or exc.__context__
    return False
