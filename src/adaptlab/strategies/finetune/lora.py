"""``lora``: LoRA (Hu et al. 2021), trainable low-rank updates ``B @ A`` beside frozen linear layers (peft)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from adaptlab.strategies.base import strategy
from adaptlab.strategies.finetune.adapted import FINETUNED_ARTIFACT
from adaptlab.strategies.finetune.gradient import GradientConfig, check_target_modules, split_modules

if TYPE_CHECKING:
    import torch


@strategy("lora", family="finetune", artifact=FINETUNED_ARTIFACT, experiment_defaults=("epochs",))
class LoraConfig(GradientConfig):
    """LoRA (Hu et al. 2021): trainable low-rank updates ``B @ A`` beside frozen linear layers."""

    default_lr = 1e-3

    rank: int = Field(8, ge=1)
    """Rank r of the update. Higher: more capacity and memory."""
    alpha: float = Field(16.0, gt=0)
    """Scale: the update is multiplied by alpha / rank."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input during training."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names (suffixes of ``model.named_modules()``) or ``all-linear``; each must match."""

    @field_validator("target_modules", mode="before")
    @classmethod
    def _modules(cls, v: Any) -> Any:
        return split_modules(v)

    def build(self, base: torch.nn.Module, *, instruction_ids: Sequence[int], seed: int) -> torch.nn.Module:
        import peft

        for p in base.parameters():
            p.requires_grad_(False)
        check_target_modules(base, self.target_modules, field="target_modules", method="lora")
        targets = "all-linear" if list(self.target_modules) == ["all-linear"] else list(self.target_modules)
        return peft.get_peft_model(base, peft.LoraConfig(task_type="CAUSAL_LM", r=self.rank, lora_alpha=self.alpha,
                                                         lora_dropout=self.dropout, target_modules=targets))
