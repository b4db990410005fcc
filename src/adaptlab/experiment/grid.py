"""Grid expansion: strategy entries -> option variants -> cells (variant x n_train x seed), and cell keys.

Labels a cell uses (``n_train``): zero-shot (and ``k: 0``) -> 0; few-shot / calibrate with random or
balanced selection -> ``k`` (demonstrations drawn from the nested subset of size k); kNN selection and
prompt search -> each training size (the pool is the nested subset); fine-tuning -> each training size.
Variants without demonstrations (zero-shot, ``k: 0``) depend on no seed: they get one cell, the first seed's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from adaptlab.errors import ConfigError, DataError
from adaptlab.results import PROMPT_STRATEGIES

if TYPE_CHECKING:
    from adaptlab.experiment.config import ExperimentConfig

log = logging.getLogger(__name__)

CELL_SCHEMA = "adaptlab.cell/1"
"""Part of every cell key: bump it when a change makes old cells incomparable."""

SizeMode = Literal["zero", "k", "sizes"]


@dataclass
class Variant:
    """One point of a strategy entry's option grid (before n_train and seeds)."""

    entry: int
    """Index of the strategy entry in ``strategies:``."""
    strategy: str
    options: dict[str, Any]
    """The entry's options with grid values expanded (what the user wrote, one value each)."""
    label: str
    """Display name, the same for every n_train and seed."""
    mode: SizeMode
    """How the cell's training examples are chosen: none, the first k, or each training size."""
    k: int = 0
    """Demonstrations (prompt strategies with demonstrations)."""
    epochs: int | None = None
    """Fine-tuning passes (gradient methods only: the option, else the experiment's ``epochs``)."""


@dataclass
class Cell:
    """One unit of work: a variant trained/prompted with ``n_train`` labelled examples and ``seed``."""

    key: str
    """sha256 of the canonical JSON of the resolved cell config (see `cell_key`)."""
    strategy: str
    options: dict[str, Any]
    """Resolved options (the variant's; fine-tuning cells also carry ``epochs``); no seed, no n_train."""
    n_train: int
    seed: int
    variant: str
    entry: int = 0
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    """What the key hashes (recorded with the cell)."""

    @property
    def family(self) -> str:
        return "prompt" if self.strategy in PROMPT_STRATEGIES else "finetune"

    @property
    def short_key(self) -> str:
        return self.key[:12]

    def describe(self) -> str:
        return f"{self.variant} n={self.n_train} seed={self.seed}"


def _list_typed(strategy: str, key: str) -> bool:
    """Whether option ``key`` of ``strategy`` itself takes a list (so only a list of lists is a grid)."""
    if strategy in PROMPT_STRATEGIES:
        from adaptlab.prompting.strategies import get_strategy

        classes: list[type] = [get_strategy(strategy).config_cls]
    else:
        from adaptlab.finetuning.configs import METHODS, TrainArgs

        classes = [METHODS[strategy], TrainArgs]
    for cls in classes:
        hints = typing.get_type_hints(cls)
        if key in hints:
            tp = hints[key]
            origins = {typing.get_origin(tp)} | {typing.get_origin(a) for a in typing.get_args(tp)}
            return bool(origins & {list, tuple})
    return False


def expand_options(strategy: str, options: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every combination of the list-valued options (in the order written), and the grid's keys."""
    axes: list[tuple[str, list[Any]]] = []
    for key, value in options.items():
        if isinstance(value, list) and (not _list_typed(strategy, key) or any(isinstance(v, list) for v in value)):
            if not value:
                raise ConfigError("an empty list expands to no variant", field=f"options.{key}")
            axes.append((key, value))
    grid_keys = [k for k, _ in axes]
    out = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        opts = dict(options)
        opts.update(zip(grid_keys, combo))
        out.append(opts)
    return out, grid_keys


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    return str(value)


_BARE = ("selection",)
"""Options shown by value alone in variant names (``balanced`` rather than ``selection=balanced``)."""


def variant_label(strategy: str, options: Mapping[str, Any], grid_keys: list[str], label: str | None) -> str:
    """``label`` + the grid's options, or the strategy name + all options (``few_shot k=8 balanced``)."""
    shown = [k for k in options if k in grid_keys] if label else list(options)
    parts = [_fmt(options[k]) if k in _BARE else f"{k}={_fmt(options[k])}" for k in shown]
    return " ".join([label or strategy] + parts)


def _reraise(exc: ConfigError, options: Mapping[str, Any]) -> ConfigError:
    where = exc.field if exc.field and exc.field not in options else f"options.{exc.field}" if exc.field else "options"
    return ConfigError(exc.message, field=where, hint=exc.hint)


def variants(cfg: "ExperimentConfig", index: int) -> list[Variant]:
    """The option variants of strategy entry ``index``, each parsed by its strategy's config class
    (unknown or invalid options raise ConfigError with the field relative to the entry)."""
    entry = cfg.strategies[index]
    expanded, grid_keys = expand_options(entry.name, entry.options)
    out = []
    for opts in expanded:
        label = variant_label(entry.name, opts, grid_keys, entry.label)
        if entry.name in PROMPT_STRATEGIES:
            import adaptlab.prompting  # noqa: F401  (registers prompt_search)
            from adaptlab.prompting.strategies import get_strategy

            try:
                parsed = get_strategy(entry.name).parse(opts)
            except ConfigError as exc:
                raise _reraise(exc, opts) from None
            k = int(getattr(parsed, "k", 0) or 0)
            selection = getattr(parsed, "selection", None)
            mode: SizeMode = ("sizes" if entry.name == "prompt_search" or (k > 0 and selection == "knn")
                              else "k" if k > 0 else "zero")
            out.append(Variant(index, entry.name, opts, label, mode, k=k))
        else:
            from adaptlab.finetuning.configs import EmbeddingProbeConfig, build_configs

            try:
                method_cfg, _ = build_configs(entry.name, opts)
            except ConfigError as exc:
                raise _reraise(exc, opts) from None
            gradient = not isinstance(method_cfg, EmbeddingProbeConfig)
            epochs = int(opts.get("epochs", cfg.epochs)) if gradient else None
            out.append(Variant(index, entry.name, opts, label, "sizes", epochs=epochs))
        if out[-1].mode != "sizes" and entry.train_sizes is not None:
            what = "no training examples" if out[-1].mode == "zero" else f"the first k={out[-1].k} examples"
            raise ConfigError(f"train_sizes does not apply: {label} uses {what}", field="train_sizes",
                              hint="remove it, or use selection: knn / prompt_search to vary the pool")
    return out


def cell_key(payload: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``payload`` (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sizes(cfg: "ExperimentConfig", index: int, n_train_all: int) -> list[int]:
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


def expand_cells(cfg: "ExperimentConfig", n_train_all: int) -> list[Cell]:
    """Every cell of the experiment, in order: entry, variant, n_train, seed. ``n_train_all`` is the
    number of training examples after carving (what ``all`` means)."""
    task_name = cfg.resolve_task().name
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for index, entry in enumerate(cfg.strategies):
        seeds = entry.seeds if entry.seeds is not None else cfg.seeds
        for var in variants(cfg, index):
            var_seeds = seeds
            if var.mode == "zero":  # no demonstrations: nothing the seed picks, one cell suffices
                sizes, var_seeds = [0], seeds[:1]
            elif var.mode == "k":
                if var.k > n_train_all:
                    raise DataError(f"k={var.k} exceeds the {n_train_all} training examples", file=cfg.file,
                                    line=cfg.line_of("strategies", index), field=f"strategies.{index}.options.k")
                sizes = [var.k]
            else:
                sizes = _sizes(cfg, index, n_train_all)
                if var.strategy in PROMPT_STRATEGIES:
                    skipped = [n for n in sizes if n < var.k]
                    if skipped:
                        log.info("%s: skipping pools smaller than k=%d: %s", var.label, var.k, skipped)
                    sizes = [n for n in sizes if n >= var.k]
            options = dict(var.options)
            if var.epochs is not None:
                options["epochs"] = var.epochs
            for n in sizes:
                for seed in var_seeds:
                    payload = {"schema": CELL_SCHEMA, "task": task_name, "model": cfg.model,
                               "strategy": var.strategy, "options": options, "n_train": n, "seed": seed,
                               "split": cfg.split, "limit": cfg.limit, "split_seed": cfg.split_seed,
                               "epochs": var.epochs}
                    # how the model is served changes the numbers (non-default only, so keys of hf/float32
                    # runs stay as they were): a resume on another backend or server runs its own cells
                    if cfg.backend != "hf":
                        payload["backend"] = {"name": cfg.backend, "base_url": cfg.base_url}
                    if cfg.dtype != "float32":
                        payload["dtype"] = cfg.dtype
                    cell = Cell(cell_key(payload), var.strategy, options, n, seed, var.label, index, payload)
                    if cell.key in seen:
                        raise ConfigError(f"strategy entry {index} repeats the cell '{cell.describe()}'",
                                          file=cfg.file, line=cfg.line_of("strategies", index),
                                          field=f"strategies.{index}")
                    seen[cell.key] = cell
                    cells.append(cell)
    return cells
