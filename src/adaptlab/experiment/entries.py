"""Strategy entries of an experiment (``strategies:``) and their option grids.

A list value of an option expands into a grid (``{k: [4, 8]}``: two variants); an option whose own type is a
list (``content_free``, ``target_modules``) takes a list of lists to grid. Every variant is parsed by its
strategy's config class, so a typo fails before anything runs, with the field relative to the entry.
"""

from __future__ import annotations

import itertools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from adaptlab.config import ConfigModel, Invalid
from adaptlab.errors import ConfigError
from adaptlab.strategies import get_strategy
from adaptlab.strategies.base import LabelUse, StrategyInfo
from adaptlab.strategies.compose import known_strategy

RESERVED_OPTIONS = ("seed",)
"""Options set by the runner per cell (the grid's ``seeds``), never in ``options``."""

TrainSize = int | Literal["all"]


def check_sizes(sizes: list[Any] | None) -> list[Any] | None:
    if sizes is None:
        return None
    if not sizes:
        raise Invalid("needs at least one size", hint="e.g. [16, 64, 256, all]")
    for s in sizes:
        if s != "all" and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise Invalid(f"invalid training size {s!r}", hint="use positive integers or 'all'")
    return list(dict.fromkeys(sizes))


def check_seeds(seeds: list[Any] | None) -> list[Any] | None:
    if seeds is None:
        return None
    if not seeds:
        raise Invalid("needs at least one seed", hint="e.g. [0, 1, 2]")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise Invalid("seeds must be integers", hint="a list such as [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise Invalid("seeds repeat")
    return seeds


class StrategyEntry(ConfigModel):
    """One entry of ``strategies:``; a bare name (``- zero_shot``) is short for ``{name: zero_shot}``."""

    key_aliases = {"strategy": "name", "method": "name", "params": "options", "sizes": "train_sizes",
                   "role": "model"}

    name: str
    """A registered strategy: zero_shot, few_shot, calibrate, prompt_search (prompting); lora, full,
    prompt_tuning, ia3, embedding_probe (fine-tuning); or one a plugin registers."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The strategy's options; a list value expands into a grid (``{k: [4, 8]}``: two variants). An option whose
    own type is a list (``content_free``, ``target_modules``) takes a list of lists to grid."""
    train_sizes: list[TrainSize] | None = None
    """Override the experiment's ``train_sizes`` (strategies that use each training size)."""
    seeds: list[int] | None = None
    """Override the experiment's ``seeds``."""
    label: str | None = None
    """Display name prefix (default: the strategy name followed by its options)."""
    model: str | None = None
    """The model role this strategy adapts (a key of the experiment's ``models:``); null: the experiment's only
    model. A distillation's student and a cascade's small model are this one."""

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, v: list[Any] | None) -> list[Any] | None:
        return check_sizes(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[Any] | None) -> list[Any] | None:
        return check_seeds(v)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_strategy(v)

    @field_validator("options")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in RESERVED_OPTIONS:
                raise Invalid(f"option '{key}' is set per cell by the experiment", field=key,
                              hint="list the seeds under `seeds:` (experiment or strategy entry)")
        return v

    @property
    def info(self) -> StrategyInfo:
        return get_strategy(self.name)

    @property
    def family(self) -> str:
        return self.info.family


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
    labels: LabelUse
    """How the cell's training examples are chosen: none, the first k, or each training size."""
    defaults: dict[str, Any]
    """Experiment-level settings the strategy takes as options (``epochs``), resolved."""
    roles: set[str] = field(default_factory=set)
    """Model roles the variant's options name besides the entry's own (a teacher's, a fallback's)."""


def _list_typed(info: StrategyInfo, key: str) -> bool:
    """Whether option ``key`` itself takes a list (so only a list of lists is a grid)."""
    field = info.config.model_fields.get(key)
    if field is None:
        return False
    tp = field.annotation
    origins = {typing.get_origin(tp)} | {typing.get_origin(a) for a in typing.get_args(tp)}
    return bool(origins & {list, tuple})


def expand_options(info: StrategyInfo, options: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every combination of the list-valued options (in the order written), and the grid's keys."""
    axes: list[tuple[str, list[Any]]] = []
    for key, value in options.items():
        if isinstance(value, list) and (not _list_typed(info, key) or any(isinstance(v, list) for v in value)):
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


def _relative(exc: ConfigError, options: Mapping[str, Any]) -> ConfigError:
    where = exc.field if exc.field and exc.field not in options else f"options.{exc.field}" if exc.field else "options"
    return ConfigError(exc.message, field=where, hint=exc.hint)


def entry_variants(entry: StrategyEntry, index: int, defaults: Mapping[str, Any]) -> list[Variant]:
    """The option variants of ``entry`` (the ``index``-th), each parsed by its strategy's config class; unknown or
    invalid options raise ConfigError with the field relative to the entry. ``defaults``: the experiment-level
    settings a strategy may take as options (``epochs``)."""
    info = entry.info
    expanded, grid_keys = expand_options(info, entry.options)
    out = []
    for opts in expanded:
        label = variant_label(entry.name, opts, grid_keys, entry.label)
        if entry.model and not entry.label:  # the same prompt on two models: two variants
            label = f"{label} @{entry.model}"
        taken = {k: opts.get(k, defaults[k]) for k in info.experiment_defaults if k in defaults}
        try:
            parsed = info.parse({**opts, **taken})
        except ConfigError as exc:
            raise _relative(exc, opts) from None
        labels = parsed.label_use()
        out.append(Variant(index, entry.name, opts, label, labels, taken, parsed.roles()))
        if labels.mode != "train_sizes" and entry.train_sizes is not None:
            what = "no training examples" if labels.mode == "none" else f"the first k={labels.k} examples"
            raise ConfigError(f"train_sizes does not apply: {label} uses {what}", field="train_sizes",
                              hint="remove it, or use selection: knn / prompt_search to vary the pool")
    return out
