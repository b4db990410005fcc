"""The strategy contract and its registry.

A strategy is a validated config (`StrategyConfig`, a pydantic model) with
``fit(task, train, dev, ctx) -> Adapted``. ``ctx`` (`FitContext`) carries what a fit may need: the models by
role (`ModelPool`), shared embedders, the seed, a working folder, the resume flag. The returned `Adapted` is
bound to its model, so ``adapted.predict(examples)`` needs nothing passed in.

Each strategy is registered once (`register_strategy`, or the `strategy` class decorator) with its family
(``prompt``: no weight changes; ``finetune``: weights change), how it counts the labels it uses (`LabelUse`),
and its artifact kind with the loader that brings a saved artifact back. Nothing else in adaptlab asks which
strategy it runs: the grid, the evaluator, the store and the report read the registry entry. A plugin adds a
strategy by importing this module and registering, without touching adaptlab.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import ConfigDict

from adaptlab.config import ConfigModel, unknown_key
from adaptlab.errors import ConfigError
from adaptlab.lm.pool import DEFAULT_ROLE, ModelPool
from adaptlab.strategies.artifacts import Adapted, ArtifactLoader, register_artifact

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.lm.base import LM
    from adaptlab.models.embeddings import Embedder
    from adaptlab.models.loading import LoadedModel

log = logging.getLogger(__name__)

FAMILIES = ("prompt", "finetune")
"""``prompt``: the model's weights are untouched (instructions, demonstrations, calibration, retrieval);
``finetune``: weights change (adapters, full training, a classifier over embeddings)."""
ARMS = ("prompt", "finetune", "distill", "cascade")
"""The options a recommendation weighs: prompt a model, fine-tune one, distil a prompted (large) model into a
tuned (small) one, or cascade a tuned small model with a prompted large fallback. A strategy's arm defaults to its
family; distillation and cascades ship tuned weights, so their family is ``finetune``."""


@dataclass
class FitContext:
    """What a fit may need besides its data, as one explicit object (no global state)."""

    models: ModelPool
    """The models by role, built once per run and shared."""
    role: str = DEFAULT_ROLE
    """The role of the model this strategy adapts."""
    seed: int = 0
    """Seeds everything the fit draws: demonstrations, data order, initialisation."""
    work_dir: Path | None = None
    """A folder the fit may write to (fine-tuning checkpoints); None: a temporary one."""
    resume: bool = False
    """Continue from the newest checkpoint in ``work_dir`` instead of starting over."""
    progress: bool = False
    """Show a progress bar (terminal runs of one strategy)."""
    cache_dir: Path | None = None
    """A folder the cells of one run share for work worth reusing across cells and resumes (a teacher's labels);
    None: nothing is reused."""

    @classmethod
    def of(cls, model: LM | LoadedModel | str, *, embedders: Mapping[str, Embedder] | None = None,
           **kw: Any) -> FitContext:
        """A context around one model: a built LM, loaded weights or a model name (library use and tests)."""
        return cls(models=ModelPool.of(model, embedders=embedders), **kw)

    def lm(self) -> LM:
        """The scoring LM of this strategy's model (shared)."""
        return self.models.lm(self.role)

    def trainable(self) -> LoadedModel:
        """Fresh weights of this strategy's model to train."""
        return self.models.trainable(self.role)

    def embedder(self, name: str) -> Embedder:
        """A shared sentence embedder."""
        return self.models.embedder(name)

    def with_role(self, role: str | None) -> FitContext:
        """This context for another model role (``None``: this one), e.g. a distillation's teacher."""
        return self if role is None or role == self.role else replace(self, role=role)


class NotMainProcess(Exception):
    """Raised by a fit on a non-main process of a multi-process launch (``accelerate launch``): that process
    trained its share; the main process saves and evaluates the artifact."""


@dataclass(frozen=True)
class LabelUse:
    """How many labelled training examples a configured strategy reads, per cell.

    ``none``: none (zero-shot); ``first_k``: the first ``k`` of the cell's stratified order (static
    demonstrations), one cell at n = k; ``train_sizes``: each of the experiment's training sizes (fine-tuning, a
    retrieval pool), skipping sizes below ``k``.
    """

    mode: Literal["none", "first_k", "train_sizes"]
    k: int = 0
    seeded: bool = False
    """``none`` only: the cell still draws with its seed (a student's initialisation and data order), so it runs
    once per seed rather than once."""


class StrategyConfig(ConfigModel):
    """Base of strategy configs: strict types (``k: "8"`` is an error, not 8) and the `fit` contract."""

    model_config = ConfigDict(strict=True)
    strategy_name: ClassVar[str] = ""
    """Set by the registration: the registry name."""

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> Adapted:
        """Adapt ``ctx``'s model to ``task`` with ``train`` (and ``dev``, where the strategy reads it)."""
        raise NotImplementedError

    def label_use(self) -> LabelUse:
        """The labels this configured strategy reads (default: each training size)."""
        return LabelUse("train_sizes")

    def roles(self) -> set[str]:
        """Model roles this configured strategy uses besides its own (a teacher's, a cascade's fallback); the
        experiment checks they exist and their models' identities enter the cell key."""
        return set()

    def learns_labels(self) -> bool:
        """Whether the strategy learns the classes from its training labels, so that a class with no training
        example cannot be predicted (fine-tuning: an error up front; prompts only warn)."""
        return False


@dataclass(frozen=True)
class ArtifactKind:
    """An artifact kind and the loader of saved artifacts of that kind."""

    name: str
    loader: ArtifactLoader


@dataclass(frozen=True)
class StrategyInfo:
    """One registry entry."""

    name: str
    config: type[StrategyConfig]
    family: str
    artifact: ArtifactKind
    experiment_defaults: tuple[str, ...] = ()
    """Experiment-level settings the strategy takes as option defaults (``epochs`` for gradient training)."""
    description: str = ""
    arm: str = ""
    """The option of a recommendation this strategy is (`ARMS`); empty: its family."""
    module: str = field(default="", compare=False)

    def parse(self, options: Mapping[str, Any] | None, *, file: str | Path | None = None,
              line: int | None = None) -> StrategyConfig:
        """The strategy's config from its options (unknown keys and bad values: one-line ConfigError)."""
        return self.config.parse(options, file=file, line=line)

    def label_use(self, config: StrategyConfig) -> LabelUse:
        return config.label_use()


_REGISTRY: dict[str, StrategyInfo] = {}

C = TypeVar("C", bound=type[StrategyConfig])


def register_strategy(name: str, config: type[StrategyConfig], *, family: str, artifact: ArtifactKind,
                      experiment_defaults: Sequence[str] = (), description: str = "", arm: str = "") -> StrategyInfo:
    """Register ``config`` (a `StrategyConfig` subclass) as strategy ``name``; returns the entry.

    Registering the same name again replaces the entry only when it comes from the same module (a re-import);
    a different module gets a ConfigError naming both.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown strategy family '{family}' for '{name}'", field="family",
                          hint="valid: " + ", ".join(FAMILIES))
    if not (isinstance(config, type) and issubclass(config, StrategyConfig)):
        raise ConfigError(f"strategy '{name}': its config must subclass adaptlab.strategies.StrategyConfig",
                          field="config")
    if arm and arm not in ARMS:
        raise ConfigError(f"unknown arm '{arm}' for '{name}'", field="arm", hint="valid: " + ", ".join(ARMS))
    old = _REGISTRY.get(name)
    if old is not None and old.module != config.__module__:
        raise ConfigError(f"strategy '{name}' is already registered by {old.module}", field="name",
                          hint=f"give the strategy in {config.__module__} another name")
    doc = (config.__doc__ or "").strip().splitlines()
    info = StrategyInfo(name, config, family, artifact, tuple(experiment_defaults),
                        description or (doc[0] if doc else ""), arm or family, module=config.__module__)
    config.strategy_name = name
    config.key_noun = f"{name} option"
    _REGISTRY[name] = info
    register_artifact(artifact.name, artifact.loader)
    log.debug("registered strategy %s (%s) from %s", name, family, config.__module__)
    return info


def strategy(name: str, *, family: str, artifact: ArtifactKind, experiment_defaults: Sequence[str] = (),
             arm: str = "") -> Callable[[C], C]:
    """Class decorator form of `register_strategy`."""
    def register(config: C) -> C:
        register_strategy(name, config, family=family, artifact=artifact, experiment_defaults=experiment_defaults,
                          arm=arm)
        return config
    return register


def get_strategy(name: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> StrategyInfo:
    """The registered strategy ``name``; unknown names raise ConfigError with a did-you-mean hint (naming
    ``field``, e.g. the command-line option, when given)."""
    if name not in _REGISTRY:
        err = unknown_key(name, _REGISTRY, file=file, line=line, what="strategy")
        err.field = field or err.field
        raise err
    return _REGISTRY[name]


def strategy_names(family: str | None = None) -> list[str]:
    """Registered names (of one family)."""
    return sorted(n for n, i in _REGISTRY.items() if family is None or i.family == family)


def family_of(name: str) -> str | None:
    """The registered family of strategy ``name`` (None when it is not registered here)."""
    info = _REGISTRY.get(name)
    return info.family if info is not None else None


def arm_of(name: str) -> str | None:
    """The registered arm of strategy ``name`` (`ARMS`; None when it is not registered here)."""
    info = _REGISTRY.get(name)
    return info.arm if info is not None else None
