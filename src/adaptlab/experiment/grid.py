"""Grid expansion: strategy entries -> option variants -> cells (variant x n_train x seed), and cell keys.

Labels a cell uses (``n_train``) come from the strategy's `LabelUse`: ``none`` -> 0 (one cell, the first seed's:
there is nothing for a seed to draw); ``first_k`` -> k (demonstrations drawn from the nested subset of size k);
``train_sizes`` -> each training size at or above its ``k`` (fine-tuning, a retrieval pool, prompt search).

Cell keys hash the options as written plus the experiment defaults a strategy takes, never unwritten defaults, so
a new default leaves old keys alone. Where a new default changes what an unwritten option does, `default_markers`
adds it to the payload for exactly the cells whose result it changes (a resumed old run re-runs those, keeps the
rest): ``format: auto`` (prompt strategies now pick the chat template when the model has one) and ``min_steps``
(gradient fine-tunes whose planned steps fall below it now train more epochs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adaptlab.errors import ConfigError, DataError
from adaptlab.experiment.config import ExperimentConfig
from adaptlab.experiment.entries import Variant, entry_variants
from adaptlab.strategies import get_strategy
from adaptlab.strategies.finetune.train_args import TrainSettings

log = logging.getLogger(__name__)

CELL_SCHEMA = "adaptlab.cell/1"
"""Part of every cell key: bump it when a change makes old cells incomparable."""


@dataclass
class Cell:
    """One unit of work: a variant trained/prompted with ``n_train`` labelled examples and ``seed``."""

    key: str
    """sha256 of the canonical JSON of the resolved cell config (see `cell_key`)."""
    strategy: str
    options: dict[str, Any]
    """Resolved options (the variant's, plus the experiment-level defaults it takes, e.g. ``epochs``); no seed,
    no n_train."""
    n_train: int
    seed: int
    variant: str
    entry: int = 0
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    """What the key hashes (recorded with the cell)."""
    role: str = "default"
    """The model role the cell adapts (`ExperimentConfig.models`); not in the key (the model's identity is)."""

    @property
    def family(self) -> str:
        return get_strategy(self.strategy).family

    @property
    def short_key(self) -> str:
        return self.key[:12]

    def describe(self) -> str:
        return f"{self.variant} n={self.n_train} seed={self.seed}"


def cell_key(payload: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``payload`` (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def variants(cfg: ExperimentConfig, index: int) -> list[Variant]:
    """The option variants of strategy entry ``index``."""
    return entry_variants(cfg.strategies[index], index, cfg.strategy_defaults())


def _sizes(cfg: ExperimentConfig, index: int, n_train_all: int) -> list[int]:
    entry = cfg.strategies[index]
    given = entry.train_sizes if entry.train_sizes is not None else cfg.train_sizes
    out: list[int] = []
    for s in given:
        n = n_train_all if s == "all" else int(s)
        if n > n_train_all:
            where = ("strategies", index, "train_sizes") if entry.train_sizes is not None else ("train_sizes",)
            raise DataError(f"training size {n} exceeds the {n_train_all} training examples of the task",
                            file=cfg.file, line=cfg.line_of(*where), field=".".join(map(str, where)),
                            hint=f"use sizes up to {n_train_all} or 'all'")
        if n not in out:
            out.append(n)
    return out


def _variant_sizes(cfg: ExperimentConfig, var: Variant, seeds: list[int], n_train_all: int) -> tuple[list[int], list[int]]:
    """(training sizes, seeds) of a variant's cells."""
    use = var.labels
    if use.mode == "none":  # no demonstrations: nothing the seed picks, one cell suffices (unless it trains)
        return [0], seeds if use.seeded else seeds[:1]
    if use.mode == "first_k":
        if use.k > n_train_all:
            raise DataError(f"k={use.k} exceeds the {n_train_all} training examples", file=cfg.file,
                            line=cfg.line_of("strategies", var.entry), field=f"strategies.{var.entry}.options.k")
        return [use.k], seeds
    sizes = _sizes(cfg, var.entry, n_train_all)
    skipped = [n for n in sizes if n < use.k]
    if skipped:
        log.info("%s: skipping pools smaller than k=%d: %s", var.label, use.k, skipped)
    return [n for n in sizes if n >= use.k], seeds


def default_markers(var: Variant, options: Mapping[str, Any], n_train: int) -> dict[str, Any]:
    """Payload entries for new defaults that change an unwritten option's result in this cell (module docstring).

    * ``{"format": "auto"}``: a prompt-family strategy whose ``format`` option defaults to ``auto`` and is not
      written (written formats are in ``options`` already).
    * ``{"min_steps": m}``: a strategy with the training recipe's ``min_steps`` (default m), not written, no
      ``max_steps``, whose planned steps (``ceil(n_train / (batch_size x grad_accum))`` x epochs) fall below m.
    """
    info = get_strategy(var.strategy)
    fields = info.config.model_fields
    out: dict[str, Any] = {}
    fmt = fields.get("format")
    if info.family == "prompt" and "format" not in options and fmt is not None and fmt.default == "auto":
        out["format"] = "auto"
    steps = fields.get("min_steps")
    if issubclass(info.config, TrainSettings) and steps is not None and steps.default is not None \
            and "min_steps" not in options:
        parsed = info.parse(dict(options))
        assert isinstance(parsed, TrainSettings)
        if parsed.max_steps is None:
            per_epoch = math.ceil(max(n_train, 1) / (parsed.batch_size * parsed.grad_accum))
            if per_epoch * parsed.epochs < steps.default:
                out["min_steps"] = steps.default
    return out


def expand_cells(cfg: ExperimentConfig, n_train_all: int) -> list[Cell]:
    """Every cell of the experiment, in order: entry, variant, n_train, seed. ``n_train_all`` is the number of
    training examples after carving (what ``all`` means)."""
    task_name = cfg.resolve_task().name
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for index, entry in enumerate(cfg.strategies):
        seeds = entry.seeds if entry.seeds is not None else cfg.seeds
        role = cfg.role_of(index)
        model = cfg.model_spec(role)
        for var in variants(cfg, index):
            sizes, var_seeds = _variant_sizes(cfg, var, seeds, n_train_all)
            options = {**var.options, **var.defaults}
            for n in sizes:
                for seed in var_seeds:
                    payload = {"schema": CELL_SCHEMA, "task": task_name, "model": model.name,
                               "strategy": var.strategy, "options": options, "n_train": n, "seed": seed,
                               "split": cfg.split, "limit": cfg.limit, "split_seed": cfg.split_seed,
                               "epochs": var.defaults.get("epochs"), **default_markers(var, options, n)}
                    # how the model is served changes the numbers (non-default only, so keys of local float32
                    # runs stay as they were): a resume on another backend or server runs its own cells
                    payload.update(model.identity())
                    if var.roles:  # a teacher's or fallback's model changes the result as much as the own one
                        payload["other_models"] = sorted(
                            ({"name": cfg.model_spec(r).name, **cfg.model_spec(r).identity()} for r in var.roles),
                            key=lambda m: json.dumps(m, sort_keys=True, default=str))
                    cell = Cell(cell_key(payload), var.strategy, options, n, seed, var.label, index, payload, role)
                    if cell.key in seen:
                        raise ConfigError(f"strategy entry {index} repeats the cell '{cell.describe()}'",
                                          file=cfg.file, line=cfg.line_of("strategies", index),
                                          field=f"strategies.{index}")
                    seen[cell.key] = cell
                    cells.append(cell)
    return cells
