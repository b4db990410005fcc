"""Pinned, dated list prices of well-known API models, in $ per 1M input and per 1M output tokens.

Read (not fetched at run time) from LiteLLM's model price map, ``model_prices_and_context_window.json`` in
the BerriAI/litellm repository, at the commit named in `PRICES_SOURCE`: its per-token ``input_cost_per_token``
and ``output_cost_per_token`` times 10^6, and its ``max_input_tokens`` as the context window. Only the base
tier is kept: cached-input, batch, priority and long-context (Gemini 1.5 above 128k, Claude Sonnet 4 above
200k tokens) rates are left out. Google models are the map's ``vertex_ai`` entries (``gemini-...``), Mistral
models its ``mistral/`` entries. Prices change: a `ModelSpec` with an explicit ``price`` overrides this table.
"""

from __future__ import annotations

from pydantic import Field

from adaptlab.config import ConfigModel

PRICES_SOURCE = ("LiteLLM model_prices_and_context_window.json at commit 19a1f629eb6fafde70968ef4815463eb08143aac "
                 "(2025-10-15/2025-11-13: the exact commit date was not readable; the map lists "
                 "claude-haiku-4-5-20251001, released 2025-10-15, and not gpt-5.1, released 2025-11-13)")
"""Where and when the table was read."""


class TokenPrice(ConfigModel):
    """What an API charges per token, in US dollars per million tokens."""

    input_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    """$ per 1M input (prompt) tokens, >= 0."""
    output_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    """$ per 1M output (generated) tokens, >= 0."""

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        """Dollars for ``input_tokens`` in and ``output_tokens`` out."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


# LiteLLM key: ($ per 1M input, $ per 1M output, max_input_tokens)
_TABLE: dict[str, tuple[float, float, int | None]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00, 128_000),
    "gpt-4o-mini": (0.15, 0.60, 128_000),
    "gpt-4.1": (2.00, 8.00, 1_047_576),
    "gpt-4.1-mini": (0.40, 1.60, 1_047_576),
    "gpt-4.1-nano": (0.10, 0.40, 1_047_576),
    "o3-mini": (1.10, 4.40, 200_000),
    # Anthropic
    "claude-3-5-haiku-20241022": (0.80, 4.00, 200_000),
    "claude-3-5-sonnet-20241022": (3.00, 15.00, 200_000),
    "claude-sonnet-4-20250514": (3.00, 15.00, 1_000_000),
    "claude-sonnet-4-5-20250929": (3.00, 15.00, 200_000),
    "claude-haiku-4-5-20251001": (1.00, 5.00, 200_000),
    # Google (Vertex AI)
    "gemini-1.5-flash": (0.075, 0.30, 1_000_000),
    "gemini-2.0-flash": (0.10, 0.40, 1_048_576),
    "gemini-2.5-flash": (0.30, 2.50, 1_048_576),
    # Mistral
    "mistral/mistral-small-latest": (0.10, 0.30, 32_000),
    "mistral/mistral-large-latest": (2.00, 6.00, 128_000),
    # DeepSeek
    "deepseek-chat": (0.60, 1.70, 131_072),
}


def _bare(name: str) -> str:
    """``name`` without a leading ``provider/`` prefix, case-folded."""
    return name.split("/", 1)[-1].strip().casefold()


def _entry(model_name: str) -> tuple[float, float, int | None] | None:
    """The table row of ``model_name``: the exact key, else the same name with or without a provider prefix."""
    wanted = model_name.strip().casefold()
    for key, row in _TABLE.items():
        if key.casefold() == wanted:
            return row
    bare = _bare(model_name)
    for key, row in _TABLE.items():
        if _bare(key) == bare:
            return row
    return None


def price_for(model_name: str) -> TokenPrice | None:
    """The pinned price of ``model_name`` (``gpt-4o``, ``openai/gpt-4o``, ``mistral-small-latest``), or None."""
    row = _entry(model_name)
    return None if row is None else TokenPrice(input_per_mtok=row[0], output_per_mtok=row[1])


def context_window(model_name: str) -> int | None:
    """The context window (the map's ``max_input_tokens``) of ``model_name``, or None when not in the table."""
    row = _entry(model_name)
    return None if row is None else row[2]


def known_priced_models() -> list[str]:
    """The model names the table prices (LiteLLM's keys), sorted."""
    return sorted(_TABLE)
