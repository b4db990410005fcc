"""Running one grid cell (prompt or fine-tune) and turning its evaluation into store records.

Every cell writes its artifact to ``RUN_DIR/cells/<key[:12]>/`` (``adapted.json`` + files and
``metrics.json``, loadable by ``adaptlab predict``); a folder left by a killed run is deleted first,
so a re-run cell starts from scratch and reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import errno
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.results import CellRecord, PredictionRow

if TYPE_CHECKING:
    from adaptlab.data import Example
    from adaptlab.evaluate import EvalResult
    from adaptlab.experiment.config import ExperimentConfig
    from adaptlab.experiment.grid import Cell
    from adaptlab.lm.base import LM
    from adaptlab.tasks import Task

log = logging.getLogger(__name__)

CELLS_DIR = "cells"


@dataclass
class CellInputs:
    """What every cell of a run shares: the task, its carved splits and the one test sample."""

    task: "Task"
    train: list["Example"]
    """The training split after carving (nested subsets are prefixes of a per-seed order of it)."""
    dev: list["Example"]
    test: list["Example"]
    """The evaluation sample shared by every cell (so cells are paired)."""


def cell_dir(run_dir: Path, cell: "Cell") -> Path:
    return run_dir / CELLS_DIR / cell.short_key


def fresh_dir(path: Path) -> Path:
    """Delete what a killed run left in ``path`` and create it empty."""
    if path.exists():
        log.info("removing the partial cell folder %s", path)
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def run_prompt_cell(cell: "Cell", cfg: "ExperimentConfig", inputs: CellInputs, train: Sequence["Example"],
                    lm: "LM", out: Path, *, embedder: Callable[[str], Any] | None = None) -> "EvalResult":
    """Fit the prompt strategy on ``train`` (the cell's nested subset) and evaluate on the shared sample.
    ``embedder(name)`` supplies a shared sentence embedder to kNN selection."""
    import adaptlab.prompting  # noqa: F401  (registers the strategies)
    from adaptlab.costs import dir_bytes
    from adaptlab.evaluate import evaluate, save_metrics
    from adaptlab.prompting.strategies import get_strategy

    spec = get_strategy(cell.strategy)
    strategy_cfg = spec.parse(cell.options)
    strategy_cfg.seed = cell.seed
    resources = {}
    if embedder is not None and getattr(strategy_cfg, "selection", None) == "knn" and strategy_cfg.k > 0:
        resources["embedder"] = embedder(strategy_cfg.embedder)
    adapted = spec.fit_fn(strategy_cfg, inputs.task, list(train), inputs.dev, lm, **resources)
    adapted.save(out)
    artifact_bytes = dir_bytes(out)
    result = evaluate(adapted, lm, inputs.task, inputs.test, seed=cell.seed, split=cfg.split)
    result.cost["train"]["artifact_bytes"] = artifact_bytes
    save_metrics(result, out)
    return result


def run_finetune_cell(cell: "Cell", cfg: "ExperimentConfig", inputs: CellInputs, train: Sequence["Example"],
                      out: Path, *, embedder: Callable[[str], Any] | None = None) -> "EvalResult":
    """Fine-tune ``cfg.model`` on ``train`` from scratch (no checkpoint resume) and evaluate.
    ``embedder(name)`` supplies a shared sentence embedder to the embedding probe."""
    from adaptlab.finetuning.configs import build_configs
    from adaptlab.finetuning.run import finetune_examples

    options = dict(cell.options)
    options["seed"] = cell.seed
    method_cfg, args = build_configs(cell.strategy, options)
    if hasattr(args, "progress"):
        args.progress = False
    result = finetune_examples(inputs.task, list(train), inputs.dev, inputs.test, cfg.model, cell.strategy,
                               cfg=method_cfg, args=args, out_dir=out, seed=cell.seed, options=cell.options,
                               split=cfg.split, limit=cfg.limit, progress=False,
                               embedder=embedder(method_cfg.embedder) if embedder is not None
                               and cell.strategy == "embedding_probe" else None)
    if result is None:  # only non-main processes of a multi-process launch return None
        raise RuntimeError("fine-tuning returned no result (not the main process)")
    return result


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def to_record(cell: "Cell", result: "EvalResult", artifact_dir: str) -> tuple[CellRecord, list[PredictionRow], dict]:
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
        extra={"cost": result.cost, "search": result.search, "cell": cell.payload})
    rows = [PredictionRow(cell=cell.key, example_id=str(p["id"]), input=str(p.get("input", "")),
                          gold=str(p.get("gold", "")), pred=str(p.get("pred", "")),
                          score=(1.0 if p["correct"] else 0.0) if "correct" in p else float(p.get("score", 0.0)))
             for p in result.predictions]
    return rec, rows, doc


def failed_record(cell: "Cell", error: BaseException, metric: str) -> CellRecord:
    """A cell that raised: status "failed" and the error as one line."""
    from adaptlab.errors import AdaptlabError

    text = error.one_line() if isinstance(error, AdaptlabError) else f"{type(error).__name__}: {error}"
    line = " ".join(text.split())[:500]
    return CellRecord(key=cell.key, strategy=cell.strategy, options=dict(cell.options), n_train=cell.n_train,
                      seed=cell.seed, variant=cell.variant, status="failed", error=line, metric=metric,
                      extra={"cell": cell.payload})



_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it wraps) is the disk or quota running out. Every later cell
    would fail the same way, so the runner stops the run instead of recording the cell as failed."""
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
