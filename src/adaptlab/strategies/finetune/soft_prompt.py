"""Serve a prompt-tuned model through `HFLM`: a causal LM with an invisible soft-prompt prefix.

peft's ``PeftModelForCausalLM`` prepends the virtual tokens inside its own ``forward``, and does so
again on every call, also when a KV cache is passed. `HFLM` instead calls the decoder directly with
explicit positions and a (shared-prefix) cache. `SoftPromptLM` makes the virtual tokens work with
both: when the cache is empty (or absent) it prepends the ``V`` soft-prompt embeddings, shifts the
positions by ``V`` and strips those ``V`` positions from the output; when the cache already holds
them it only extends the attention mask and shifts the positions. Callers keep counting real tokens
only, so every HFLM path (prefix cache, no cache, generation) sees the soft prompt exactly once.

The numbers equal peft's forward on the same input (checked in the tests).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _cache_length(cache: Any) -> int:
    if cache is None:
        return 0
    try:
        return int(cache.get_seq_length())
    except (AttributeError, TypeError, IndexError):
        return 0


class _SoftPromptDecoder(nn.Module):
    """The base decoder with the soft prompt in front (see module docstring)."""

    def __init__(self, owner: "SoftPromptLM") -> None:
        super().__init__()
        self._owner = [owner]  # a list, so the owner is not registered as a submodule (no cycle)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Any = None, past_key_values: Any = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Takes the KV cache by either name (``cache``: transformers >= 5.24) and passes it on by the
        decoder's own."""
        from adaptlab.lm.prefix import cache_kwarg

        past_key_values = cache if cache is not None else past_key_values
        owner = self._owner[0]
        decoder = owner.lm.get_decoder()
        if inputs_embeds is None:
            inputs_embeds = decoder.get_input_embeddings()(input_ids)
        b, n = inputs_embeds.shape[:2]
        v = owner.num_virtual_tokens
        cached = _cache_length(past_key_values)
        if cached == 0:
            prompt = owner.prompt.to(inputs_embeds.dtype)[None].expand(b, -1, -1)
            inputs_embeds = torch.cat([prompt, inputs_embeds], dim=1)
            offset, strip = v, v
            if position_ids is not None:
                first = torch.arange(v, device=position_ids.device)[None].expand(b, -1)
                position_ids = torch.cat([first, position_ids + v], dim=1)
        else:
            # the cache holds the virtual tokens; the caller's mask/positions may or may not count them
            if attention_mask is not None:
                offset = cached + n - attention_mask.shape[1]
            elif position_ids is not None:  # no mask: the first new position tells which way it counts
                offset = cached - int(position_ids[0, 0])
            else:
                offset = 0  # the decoder derives positions from the cache length, which counts them
            strip = 0
            if position_ids is not None:
                position_ids = position_ids + offset
        if attention_mask is not None and offset:
            ones = attention_mask.new_ones((attention_mask.shape[0], offset))
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        kwargs[cache_kwarg(decoder.forward)] = past_key_values
        out = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                      **kwargs)
        if strip:
            out.last_hidden_state = out.last_hidden_state[:, strip:]
        return out


class SoftPromptLM(nn.Module):
    """``lm`` (a frozen causal LM) with ``prompt`` (``(V, hidden)`` embeddings) always in front."""

    def __init__(self, lm: nn.Module, prompt: torch.Tensor) -> None:
        super().__init__()
        self.lm = lm
        self.prompt = nn.Parameter(prompt.detach().clone(), requires_grad=False)
        self._decoder = _SoftPromptDecoder(self)

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.prompt.shape[0])

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def generation_config(self) -> Any:
        return getattr(self.lm, "generation_config", None)

    def get_decoder(self) -> nn.Module:
        return self._decoder

    def get_output_embeddings(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        """Logits for the real tokens only (the soft prompt is invisible to the caller)."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("labels", None)
        out = self._decoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        logits = self.lm.get_output_embeddings()(out.last_hidden_state)
        from adaptlab.lm.prefix import output_cache

        field = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
        return CausalLMOutputWithPast(logits=logits, **{field: output_cache(out)})
