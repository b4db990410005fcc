"""``ia3``: (IA)^3 (Liu et al. 2022), learned vectors that rescale keys, values and feed-forward activations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import field_validator, model_validator

from adaptlab.errors import ConfigError
from adaptlab.strategies.base import strategy
from adaptlab.strategies.finetune.adapted import FINETUNED_ARTIFACT
from adaptlab.strategies.finetune.gradient import GradientConfig, check_target_modules, split_modules

if TYPE_CHECKING:
    import torch


@strategy("ia3", family="finetune", artifact=FINETUNED_ARTIFACT, experiment_defaults=("epochs",))
class IA3Config(GradientConfig):
    """(IA)^3 (Liu et al. 2022): learned vectors that rescale keys, values and feed-forward activations."""

    default_lr = 3e-3

    target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
    """Modules whose activations are rescaled; each must match a module of the model."""
    feedforward_modules: tuple[str, ...] = ("down_proj",)
    """Subset of ``target_modules`` treated as feed-forward (scaled on the input side)."""

    @field_validator("target_modules", "feedforward_modules", mode="before")
    @classmethod
    def _modules(cls, v: Any) -> Any:
        return split_modules(v)

    @model_validator(mode="after")
    def _feedforward_in_targets(self) -> IA3Config:
        extra = [m for m in self.feedforward_modules if m not in self.target_modules]
        if extra:
            raise ConfigError(f"feedforward module '{extra[0]}' is not in target_modules", field="feedforward_modules")
        return self

    def build(self, base: torch.nn.Module, *, instruction_ids: Sequence[int], seed: int) -> torch.nn.Module:
        import peft

        for p in base.parameters():
            p.requires_grad_(False)
        check_target_modules(base, self.target_modules, field="target_modules", method="ia3")
        return peft.get_peft_model(base, peft.IA3Config(task_type="CAUSAL_LM", target_modules=list(self.target_modules),
                                                        feedforward_modules=list(self.feedforward_modules)))
