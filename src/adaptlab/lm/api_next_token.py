"""Scoring single-token continuations from one next-token request (no echo).

A server that echoes prompt logprobs (llama.cpp, vLLM) also reports the ``top_logprobs`` of the first generated
token. When every continuation of a request is one token among those, one request without echo scores them all:
the server computes the context once (reusing its prompt cache for a shared prefix) and returns the distribution
over the next token. llama-cpp-python sorts its whole vocabulary for every *echoed* token (~0.1-0.2 s each for
SmolLM2's 49k), so echo costs grow with the prompt even when its prefix is cached; this path sorts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TOP_LOGPROBS = 20
"""Alternatives the echo probe asks for (the most OpenAI-compatible servers list)."""


def next_token_payload(model: str, prompt: str, top: int) -> dict[str, Any]:
    """The request: one greedy token after ``prompt`` with its ``top`` alternatives.

    ``min_tokens: 1`` keeps an end-of-sequence token from ending the answer with no logprobs (llama-cpp-python);
    it changes which token is generated, never the reported distribution."""
    return {"model": model, "prompt": prompt, "max_tokens": 1, "min_tokens": 1, "temperature": 0.0,
            "logprobs": top}


def next_token_scores(logprobs: dict[str, Any], continuations: Sequence[str]) -> list[float | None] | None:
    """log p of each continuation as the next token, from a completion's ``logprobs``: None for a continuation
    missing from the first position's ``top_logprobs`` (not a single token, or unlikely); None in place of the list
    when the answer has no ``top_logprobs`` (a server that does not list alternatives)."""
    tops = logprobs.get("top_logprobs")
    if not isinstance(tops, list) or not tops or not isinstance(tops[0], dict):
        return None
    first = tops[0]
    out: list[float | None] = []
    for cont in continuations:
        value = first.get(cont)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        out.append(float(value) if ok else None)
    return out
