"""`StrategyRef`: a strategy named inside another one's options (a distillation's teacher and student, a
cascade's small and large parts), with the model role it runs on.

```yaml
teacher: {name: few_shot, model: large, options: {k: 8}}
```

The reference is parsed by the named strategy's own config class, so a typo in a teacher's options fails when
the experiment loads, with the field relative to the outer option (``options.teacher.options.k``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from adaptlab.config import ConfigModel, Invalid
from adaptlab.errors import ConfigError
from adaptlab.strategies.base import StrategyConfig, StrategyInfo, get_strategy


def known_strategy(name: str) -> str:
    """``name`` if a strategy is registered under it, else an `Invalid` with a did-you-mean hint (for validators of
    a ``name`` field)."""
    try:
        get_strategy(name)
    except ConfigError as exc:
        raise Invalid(f"unknown strategy '{name}'", hint=exc.hint) from None
    return name


class StrategyRef(ConfigModel):
    """A strategy with its options and the model role it adapts (null: the outer strategy's model)."""

    key_aliases = {"strategy": "name", "params": "options", "role": "model"}

    name: str
    """A registered strategy (``zero_shot``, ``few_shot``, ``lora``, ...)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Its options (one value each: no grids inside a reference)."""
    model: str | None = None
    """The model role it runs on (a key of the experiment's ``models:``); null: the outer strategy's model."""

    _config: StrategyConfig | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_strategy(v)

    @model_validator(mode="after")
    def _parse(self) -> StrategyRef:
        try:
            self._config = get_strategy(self.name).parse(self.options)
        except ConfigError as exc:
            raise Invalid(exc.message, field=f"options.{exc.field}" if exc.field else "options",
                          hint=exc.hint) from None
        return self

    @property
    def info(self) -> StrategyInfo:
        return get_strategy(self.name)

    @property
    def config(self) -> StrategyConfig:
        """The parsed config of the referenced strategy."""
        assert self._config is not None
        return self._config

    def config_with_epochs(self, epochs: int | None) -> StrategyConfig:
        """The config with the experiment's ``epochs`` where the strategy takes epochs and its options leave them
        out (a student's or a cascade's small model's training schedule)."""
        cfg = self.config
        if epochs is None or "epochs" in self.options or "epochs" not in type(cfg).model_fields:
            return cfg
        return self.info.parse({**self.options, "epochs": epochs})

    def roles(self) -> set[str]:
        """The roles this reference runs on (its own, and those its strategy names)."""
        return ({self.model} if self.model else set()) | self.config.roles()

    def require_family(self, family: str, what: str) -> StrategyRef:
        """This reference, or an `Invalid` saying ``what`` must be a ``family`` strategy."""
        if self.info.family != family:
            kind = "prompting" if family == "prompt" else "fine-tuning"
            raise Invalid(f"{what} must be a {kind} strategy, got '{self.name}' ({self.info.family})",
                          field="name")
        return self
