"""``prompt_tuning``: prompt tuning (Lester et al. 2021), trainable soft-prompt embeddings before every input.

The soft prompt starts from the embeddings of the task instruction (repeated to length), of random vocabulary
rows, or from noise. Scoring runs the base model with the soft prompt in front (`SoftPromptLM`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from adaptlab.strategies.base import strategy
from adaptlab.strategies.finetune.adapted import FINETUNED_ARTIFACT
from adaptlab.strategies.finetune.gradient import GradientConfig

if TYPE_CHECKING:
    import torch


@strategy("prompt_tuning", family="finetune", artifact=FINETUNED_ARTIFACT, experiment_defaults=("epochs",))
class PromptTuningConfig(GradientConfig):
    """Prompt tuning (Lester et al. 2021): trainable soft-prompt embeddings before every input."""

    default_lr = 3e-2
    mergeable = False

    num_virtual_tokens: int = Field(16, ge=1)
    """Length of the soft prompt. Every query costs this many extra tokens."""
    init: Literal["instruction", "random", "vocab"] = "instruction"
    """Initialise from the embeddings of the task instruction (repeated), random vocabulary rows, or ``random``
    normal noise."""

    def virtual_tokens(self) -> int:
        return self.num_virtual_tokens

    def windowed_loss(self) -> bool:
        return False  # peft prepends the virtual tokens inside forward: positions are its business

    @staticmethod
    def scoring_model(model: Any) -> Any:
        from adaptlab.strategies.finetune.soft_prompt import SoftPromptLM

        return SoftPromptLM(model.get_base_model(), soft_prompt(model))

    def build(self, base: torch.nn.Module, *, instruction_ids: Sequence[int], seed: int) -> torch.nn.Module:
        import peft

        for p in base.parameters():
            p.requires_grad_(False)
        model = peft.get_peft_model(base, peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=self.num_virtual_tokens, prompt_tuning_init="RANDOM"))
        self._init_soft_prompt(model, instruction_ids, seed)
        return model

    def _init_soft_prompt(self, model: Any, instruction_ids: Sequence[int], seed: int) -> None:
        """Soft-prompt initialisation (peft's TEXT init without needing a tokenizer path)."""
        import torch

        emb = model.get_input_embeddings().weight
        v = self.num_virtual_tokens
        g = torch.Generator().manual_seed(seed)
        if self.init == "instruction" and instruction_ids:
            ids = (list(instruction_ids) * (v // len(instruction_ids) + 1))[:v]
            init = emb[torch.tensor(ids)].detach().clone()
        elif self.init in ("vocab", "instruction"):
            init = emb[torch.randint(0, emb.shape[0], (v,), generator=g)].detach().clone()
        else:
            init = torch.randn(v, emb.shape[1], generator=g) * float(emb.detach().std())
        encoder = model.prompt_encoder[model.active_adapter]
        with torch.no_grad():
            encoder.embedding.weight.copy_(init.to(encoder.embedding.weight.dtype))


def soft_prompt(model: Any) -> torch.Tensor:
    """The learned ``(V, hidden)`` soft prompt of a peft prompt-tuning model."""
    return model.get_prompt_embedding_to_save(adapter_name=model.active_adapter).detach()
