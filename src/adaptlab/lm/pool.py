"""`ModelPool`: the models a run uses, by role, each built once and shared by every cell that needs it.

A role (``default``, or the names an experiment gives: ``large``, ``small``) maps to a `ModelSpec`, an already
built `LM`, or loaded weights. Prompt strategies score through ``lm(role)``; fine-tuning gets fresh trainable
weights from ``trainable(role)`` (a copy: the shared model is never modified). Sentence embedders are shared
by name. A model that fails to build fails every later request at once (one error, not one load per cell).

`track` records which shared models a cell uses (`ModelUse`), and `held_bytes` sizes those that were already
loaded when it started: a cell's peak memory counts them, not the models earlier cells left in the process
(`adaptlab.models.costs.cell_peak`). Fresh weights from `trainable` are the cell's own memory, not a use.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adaptlab.errors import ConfigError
from adaptlab.models.costs import module_bytes
from adaptlab.models.spec import ModelSpec

if TYPE_CHECKING:
    from adaptlab.lm.base import LM
    from adaptlab.models.embeddings import Embedder
    from adaptlab.models.loading import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_ROLE = "default"


@dataclass
class ModelUse:
    """The shared models used while a `ModelPool.track` window was open: ``("lm", role)`` and
    ``("embedder", name)`` keys, with how often each was asked for, and which of them were built inside it."""

    used: dict[tuple[str, str], int] = field(default_factory=dict)
    built: set[tuple[str, str]] = field(default_factory=set)


class ModelPool:
    """Models by role (see the module docstring). ``lms`` and ``loaded`` bind roles to objects built elsewhere
    (tests, library users); ``embedders`` to sentence embedders by name."""

    def __init__(self, specs: Mapping[str, ModelSpec] | None = None, *, lms: Mapping[str, LM] | None = None,
                 loaded: Mapping[str, LoadedModel] | None = None,
                 embedders: Mapping[str, Embedder] | None = None) -> None:
        self._specs = dict(specs or {})
        self._lms: dict[str, LM] = dict(lms or {})
        self._loaded: dict[str, LoadedModel] = dict(loaded or {})
        self._embedders: dict[str, Any] = dict(embedders or {})
        self._errors: dict[str, BaseException] = {}
        self._tracks: list[ModelUse] = []

    @classmethod
    def of(cls, model: LM | LoadedModel | ModelSpec | str, *, role: str = DEFAULT_ROLE,
           embedders: Mapping[str, Embedder] | None = None) -> ModelPool:
        """A pool with one role bound to ``model``: a built LM, loaded weights, a spec or a model name."""
        from adaptlab.models.loading import LoadedModel

        if isinstance(model, str):
            return cls({role: ModelSpec(name=model)}, embedders=embedders)
        if isinstance(model, ModelSpec):
            return cls({role: model}, embedders=embedders)
        if isinstance(model, LoadedModel):
            return cls({role: ModelSpec(name=model.name)}, loaded={role: model}, embedders=embedders)
        return cls(lms={role: model}, embedders=embedders)

    @property
    def roles(self) -> list[str]:
        return sorted(set(self._specs) | set(self._lms) | set(self._loaded))

    def spec(self, role: str = DEFAULT_ROLE) -> ModelSpec:
        """The role's spec (a bound LM without one is described by its name)."""
        if role in self._specs:
            return self._specs[role]
        if role in self._lms:
            return ModelSpec.model_construct(name=self._lms[role].name)
        raise ConfigError(f"no model for role '{role}'", field="model",
                          hint="roles here: " + (", ".join(self.roles) or "none"))

    @contextmanager
    def track(self) -> Iterator[ModelUse]:
        """While active, record the shared models asked for (`lm`, `embedder`) in the yielded `ModelUse`."""
        use = ModelUse()
        self._tracks.append(use)
        try:
            yield use
        finally:
            self._tracks.remove(use)

    def _note(self, key: tuple[str, str], *, built: bool = False) -> None:
        for use in self._tracks:
            use.used[key] = use.used.get(key, 0) + 1
            if built:
                use.built.add(key)

    def held_bytes(self, use: ModelUse, device_type: str | None = None) -> int:
        """Parameter and buffer bytes (on ``device_type`` when given) of the models ``use`` used that were loaded
        before its window opened; each model once, models without local weights (an API) count 0."""
        modules: dict[int, Any] = {}
        for kind, name in use.used:
            if (kind, name) in use.built:
                continue
            obj = self._lms.get(name) if kind == "lm" else self._embedders.get(name)
            module = getattr(obj, "model", None)
            if module is not None:
                modules[id(module)] = module
        return sum(module_bytes(m, device_type) for m in modules.values())

    def lm(self, role: str = DEFAULT_ROLE) -> LM:
        """The role's scoring LM, built on first use and shared."""
        if role in self._errors:
            raise self._errors[role]
        self._note(("lm", role), built=role not in self._lms and role not in self._loaded)
        if role not in self._lms:
            try:
                if role in self._loaded:
                    from adaptlab.lm.hf import HFLM

                    self._lms[role] = HFLM.from_loaded(self._loaded[role], batch_size=self.spec(role).batch_size)
                else:
                    from adaptlab.lm.factory import build_lm

                    self._lms[role] = build_lm(self.spec(role))
            except Exception as exc:  # every cell of this role would fail the same way: build once
                self._errors[role] = exc
                raise
        return self._lms[role]

    def trainable(self, role: str = DEFAULT_ROLE) -> LoadedModel:
        """Fresh weights of the role's model to train (the pool's own copy is never modified)."""
        from adaptlab.models.loading import LoadedModel, load_model

        if role in self._loaded:
            src = self._loaded[role]
            return LoadedModel(name=src.name, model=copy.deepcopy(src.model), tokenizer=src.tokenizer,
                               device=src.device, dtype=src.dtype, path=src.path)
        spec = self.spec(role)
        if spec.backend != "hf":
            raise ConfigError(f"cannot fine-tune '{spec.name}': it is served by the {spec.backend} backend",
                              field="model", hint="fine-tune a model with local weights (backend: hf)")
        return load_model(spec.name, dtype=spec.dtype, device="cpu", trust_remote_code=spec.trust_remote_code,
                          allow_pickle=spec.allow_pickle)

    def embedder(self, name: str) -> Embedder:
        """A sentence embedder by name, loaded once."""
        self._note(("embedder", name), built=name not in self._embedders)
        if name not in self._embedders:
            from adaptlab.models.embeddings import load_embedder

            self._embedders[name] = load_embedder(name)
        return self._embedders[name]
