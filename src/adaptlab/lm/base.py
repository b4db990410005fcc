"""The `LM` protocol (after lm-evaluation-harness): batched log-likelihood scoring and generation.

Strategies render prompts to plain strings and call these two methods; a backend (local Hugging Face
model, OpenAI-compatible HTTP server, ...) decides how to compute them. The evaluator never knows how
a model was adapted.

Two optional attributes are read where a backend has them (`batch_size_of`, `token_price_of`), so backends and
artifacts that predate them keep working: ``batch_size`` (sequences a local backend scores per forward pass,
`HFLM`) and ``token_price`` (the `TokenPrice` of a model behind a priced API, with ``price_source`` saying where
it comes from; `APILM`, set by `adaptlab.lm.factory.build_lm`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from adaptlab.models.prices import TokenPrice


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
    reported_input_tokens: int = 0
    """Input tokens as a server's responses reported them (``usage.prompt_tokens``), what an API bills; 0 for
    local backends."""
    reported_output_tokens: int = 0
    """Output tokens as a server's responses reported them (``usage.completion_tokens``)."""
    unreported_requests: int = 0
    """Server responses without (complete) usage: their tokens are missing from the reported counts."""
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, other: "Usage") -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.computed_tokens += other.computed_tokens
        self.generated_tokens += other.generated_tokens
        self.reported_input_tokens += other.reported_input_tokens
        self.reported_output_tokens += other.reported_output_tokens
        self.unreported_requests += other.unreported_requests
        self.seconds += other.seconds
        for k, v in other.extra.items():
            self.extra[k] = self.extra.get(k, 0.0) + v


@runtime_checkable
class LM(Protocol):
    """What every backend provides. Implementations keep ``usage`` up to date."""

    name: str
    usage: Usage
    n_params: int | None
    """Parameters of one forward pass (FLOPs = 2 x n_params per token); None when unknown (an API model)."""
    max_length: int | None
    """The context window in tokens; None when unknown (strategies that fill the context assume 2,048)."""
    # Optional (not protocol members, read through `batch_size_of` / `token_price_of`): ``batch_size: int``,
    # ``token_price: TokenPrice | None`` with ``price_source: str | None``.

    def keep_prefix(self) -> AbstractContextManager[bool]:
        """While active, keep the previous call's prompt prefix computed, as a serving engine's prefix cache does;
        yields whether the backend can (False: calls inside are computed in full, as outside)."""
        ...

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


@contextmanager
def no_kept_prefix() -> Iterator[bool]:
    """`LM.keep_prefix` of a backend that keeps nothing between calls."""
    yield False


def batch_size_of(lm: Any) -> int | None:
    """The sequences ``lm`` scores per forward pass (its ``batch_size``), None when the backend batches on its
    own terms (an API server, vLLM, an embedder)."""
    size = getattr(lm, "batch_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


@contextmanager
def batch_size_set(lm: Any, size: int) -> Iterator[bool]:
    """While active, ``lm`` scores ``size`` sequences per forward pass (its ``batch_size``, restored on exit);
    yields whether it could (False, and nothing changes, for a backend without a batch size)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    before = batch_size_of(lm)
    if before is None:
        yield False
        return
    lm.batch_size = size
    try:
        yield True
    finally:
        lm.batch_size = before


def token_price_of(lm: Any) -> dict[str, Any] | None:
    """``{"input_per_mtok", "output_per_mtok", "source"}`` of a model behind a priced API (its ``token_price``
    and ``price_source``), None for a local backend or an API model without a known price."""
    price: TokenPrice | None = getattr(lm, "token_price", None)
    if price is None:
        return None
    return {"input_per_mtok": float(price.input_per_mtok), "output_per_mtok": float(price.output_per_mtok),
            "source": getattr(lm, "price_source", None)}


class NoModelLM:
    """The `LM` of an artifact that predicts without a language model (a baseline, a rule): it keeps the usage
    counters the evaluator reads, scores nothing and counts no tokens."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.usage = Usage()
        self.n_params: int | None = None
        self.max_length: int | None = None
        self.token_price: TokenPrice | None = None

    keep_prefix = staticmethod(no_kept_prefix)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], *,
                      progress: bool = False) -> list[ContinuationScores]:
        raise TypeError(f"{self.name} predicts without a language model: it cannot score text")

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 progress: bool = False) -> list[str]:
        raise TypeError(f"{self.name} predicts without a language model: it cannot generate text")

    def count_tokens(self, text: str) -> int:
        return 0
