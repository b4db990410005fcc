"""One strategy, once: what ``adaptlab prompt`` and ``adaptlab finetune`` run. The task's splits are read and
checked before any model loads, the strategy fits on the training examples (all of them, or a nested stratified
subset of ``n_train``), and the same cell path as a compare run saves the artifact, ``metrics.json``,
``config.json`` and a model card into the output folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.example import seeded_sample
from adaptlab.data.splits import absent_labels, check_examples, load_splits, nested_subsets
from adaptlab.data.task import Task
from adaptlab.data.validate import check_templates
from adaptlab.errors import DataError
from adaptlab.evaluate import EvalResult, EvalSettings
from adaptlab.experiment.cells import CellInputs, CellWork, fit_and_evaluate
from adaptlab.files import check_run_dir, staged_dir
from adaptlab.strategies import ModelPool, get_strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SingleRun:
    """Where and how one strategy runs once."""

    out_dir: Path
    """The artifact, metrics.json, config.json and README.md go here."""
    n_train: int | None = None
    """Training examples (a seeded, label-stratified nested subset); None: all."""
    split: str = "test"
    """Split evaluated on."""
    limit: int | None = None
    """Evaluate a seeded sample of this many examples."""
    seed: int = 0
    """Seeds the split carving, the subset, the strategy and the bootstrap."""
    resume: bool = False
    """Continue an interrupted fit from its newest checkpoint (fine-tuning)."""
    force: bool = False
    """Replace a run already in ``out_dir`` (it is kept otherwise)."""
    keep_checkpoints: bool = False
    """Keep the checkpoints in ``out_dir`` after the fit finishes (fine-tuning)."""
    progress: bool = True
    latency_sample: int = EvalSettings.latency_sample


def run_single(task: Task, strategy: str, options: Mapping[str, Any] | None, models: ModelPool,
               run: SingleRun) -> EvalResult | None:
    """Fit ``strategy`` with ``options`` on ``task`` and evaluate it (see the module docstring). The models are
    built only after the options, the output folder and the data have been checked. Returns None on the non-main
    processes of a multi-process launch, which only train."""
    info = get_strategy(strategy)
    options = dict(options or {})
    config = info.parse(options)
    primary = int(os.environ.get("RANK", "0")) == 0  # a multi-process launch: the main process owns the folder
    if primary:
        check_run_dir(run.out_dir, replace=run.force, resume=run.resume)  # before reading any data
    splits = load_splits(task, seed=run.seed)
    examples = seeded_sample(splits[run.split], run.limit, run.seed)
    if not examples:
        raise DataError(f"no {run.split} examples to evaluate", file=task.source, field=f"data.{run.split}",
                        hint=f"add data.{run.split} to the task" if run.split != "train" else None)
    for name in ("train", "dev"):  # demonstrations, training, calibration and search read their labels
        check_examples(task, splits[name], name)
    check_examples(task, examples, run.split, unique_ids=True)
    check_templates(task, {"train": splits.train, "dev": splits.dev, run.split: examples})
    train = _training_examples(task, splits.train, splits.dev, config.learns_labels(), info.name, run)
    inputs = CellInputs(task=task, train=list(splits.train), dev=list(splits.dev), test=examples)
    log.info("fitting %s on %s (%d train, %d dev)", strategy, task.name, len(train), len(splits.dev))
    with staged_dir(run.out_dir, replace=run.force, resume=run.resume, primary=primary) as out:
        work = CellWork(strategy, options, train, run.seed, out, split=run.split, resume=run.resume,
                        progress=run.progress, keep_checkpoints=run.keep_checkpoints)
        return fit_and_evaluate(work, inputs, models, EvalSettings(latency_sample=run.latency_sample))


def _training_examples(task: Task, train: list, dev: list, learns: bool, name: str, run: SingleRun) -> list:
    """The examples the strategy trains on: all, or the nested subset of ``run.n_train``."""
    train_file = task.resolve_path(task.data.train.path) if (
        task.data.train is not None and task.data.train.path) else task.source
    if learns and not train:
        raise DataError(f"{name} needs training examples and the task has none", file=task.source,
                        field="data.train")
    if run.n_train is not None and run.n_train > len(train):
        carved = f" ({len(dev)} went to the carved dev split)" if task.data.dev is None and dev else ""
        raise DataError(f"n_train {run.n_train} is larger than the {len(train)} training examples{carved}",
                        file=train_file, field="n_train", hint=f"use --n-train {len(train)} or less")
    absent = absent_labels(task, train) if train else []
    if absent and learns:
        raise DataError(f"label '{absent[0]}' has no training examples" + (
            f" (nor {', '.join(absent[1:])})" if len(absent) > 1 else ""), file=train_file, field="labels",
            hint="a model that learns from labels cannot learn a class it never sees: add examples or remove the label")
    if absent:
        log.warning("%d label(s) have no training examples (%s): demonstrations cannot show them", len(absent),
                    ", ".join(absent))
    if run.n_train is None:
        return list(train)
    label_of = task.label_of if task.type == "classification" else None
    subset = nested_subsets(train, [run.n_train], seed=run.seed, label_of=label_of)[run.n_train]
    missing = absent_labels(task, subset)
    if missing:
        log.warning("the %d-example training subset has no example of %d label(s) (%s); a larger n_train covers "
                    "every label", len(subset), len(missing), ", ".join(missing))
    return subset
