"""The `LM` protocol (after lm-evaluation-harness): batched log-likelihood scoring and generation.

Strategies render prompts to plain strings and call these two methods; a backend (local Hugging Face
model, OpenAI-compatible HTTP server, ...) decides how to compute them. The evaluator never knows how
a model was adapted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score each continuation given the context: log p(continuation | context).

    Continuations are appended to the context verbatim (include a leading space if the prompt
    format needs one, e.g. ``" positive"``).
    """

    context: str
    continuations: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.continuations:
            raise ValueError("a LoglikelihoodRequest needs at least one continuation")


@dataclass(frozen=True)
class ContinuationScores:
    """Result for one request: one entry per continuation, in request order."""

    logprobs: tuple[float, ...]
    """Summed log-probability of each continuation's tokens (natural log)."""
    token_counts: tuple[int, ...]
    """Number of tokens of each continuation (for length-normalised scoring)."""
    prompt_tokens: int = 0
    """Tokens of the context as the model sees it (cost accounting)."""

    def normalised(self) -> tuple[float, ...]:
        """Per-token (length-normalised) log-probabilities."""
        return tuple(lp / max(n, 1) for lp, n in zip(self.logprobs, self.token_counts))


@dataclass
class Usage:
    """Running counters a backend keeps for cost accounting."""

    requests: int = 0
    prompt_tokens: int = 0
    """Tokens of all contexts + continuations as submitted (what a naive engine would compute)."""
    computed_tokens: int = 0
    """Tokens actually run through the model (less than prompt_tokens when a prefix cache is reused)."""
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, other: "Usage") -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.computed_tokens += other.computed_tokens
        self.generated_tokens += other.generated_tokens
        self.seconds += other.seconds
        for k, v in other.extra.items():
            self.extra[k] = self.extra.get(k, 0.0) + v


@runtime_checkable
class LM(Protocol):
    """What every backend provides. Implementations keep ``usage`` up to date."""

    name: str
    usage: Usage

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], *, progress: bool = False
    ) -> list[ContinuationScores]:
        """Score every request; results in request order."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        progress: bool = False,
    ) -> list[str]:
        """Greedy-decode each prompt; the text is cut before the first stop string."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under this model's tokenizer (for cost and context checks)."""
        ...
