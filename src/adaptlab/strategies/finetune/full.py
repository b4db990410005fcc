"""``full``: full fine-tuning, every weight trains (the most memory and the biggest artifact)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adaptlab.strategies.base import strategy
from adaptlab.strategies.finetune.adapted import FINETUNED_ARTIFACT
from adaptlab.strategies.finetune.gradient import GradientConfig

if TYPE_CHECKING:
    import torch


@strategy("full", family="finetune", artifact=FINETUNED_ARTIFACT, experiment_defaults=("epochs",))
class FullConfig(GradientConfig):
    """Full fine-tuning: every weight trains (the most memory and the biggest artifact)."""

    default_lr = 5e-5
    full_weights = True
    mergeable = False

    freeze_embeddings: bool = False
    """Keep the (tied) token embeddings frozen: less optimizer memory for large vocabularies."""

    def build(self, base: torch.nn.Module, *, instruction_ids: Sequence[int], seed: int) -> torch.nn.Module:
        for p in base.parameters():
            p.requires_grad_(True)
        if self.freeze_embeddings:
            base.get_input_embeddings().weight.requires_grad_(False)
        return base
