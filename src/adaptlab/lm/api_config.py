"""Configuration, errors and HTTP helpers of the OpenAI-compatible API backend (`adaptlab.lm.api.APILM`)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

from pydantic import ConfigDict, Field, field_validator

from adaptlab.config import ConfigModel, Invalid
from adaptlab.errors import AdaptlabError

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying; any other 4xx/5xx fails at once."""
MAX_SERVER_STOPS = 4
"""The OpenAI API accepts at most four stop strings; the rest are applied client-side only."""


class BackendError(AdaptlabError):
    """A model backend (e.g. an API server) failed: unreachable, timed out, or answered an error.

    ``partial`` holds the results finished before the failure, aligned with the submitted inputs
    (``None`` where no result was obtained), so that completed work is not lost.
    ``status`` is the last HTTP status seen, if any; ``transport`` is True when the server could
    not be reached or did not answer in time (as opposed to answering with an error).
    """

    def __init__(self, message: str, *, partial: list[Any] | None = None, status: int | None = None,
                 transport: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.partial: list[Any] = partial if partial is not None else []
        self.status = status
        self.transport = transport


class APIConfig(ConfigModel):
    """How to reach an OpenAI-compatible server and how hard to try."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """API root including the version path, e.g. ``http://127.0.0.1:8000/v1``."""
    model: str = "default"
    """Model name sent in each request (llama.cpp servers ignore or alias it)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (sent as ``Bearer``); unset or empty: no header."""
    mode: Literal["completions", "chat"] = "completions"
    """Endpoint used by `generate`: raw ``/completions`` or ``/chat/completions`` (one user turn)."""
    concurrency: int = Field(4, ge=1)
    """Requests in flight at once."""
    timeout_s: float = Field(60.0, gt=0, le=3600)
    """Per-request timeout (connect, read, write) in seconds."""
    max_retries: int = Field(3, ge=0, le=20)
    """Retries after the first attempt on connection errors, timeouts, malformed JSON, 429, 5xx."""
    backoff_base_s: float = Field(0.5, ge=0, le=3600)
    """First backoff; doubles each retry, with jitter (x0.5 to x1)."""
    max_backoff_s: float = Field(30.0, ge=0, le=3600)
    """Cap on one backoff wait, including a server's ``Retry-After``."""
    logprobs: Literal["auto", "on", "off"] = "auto"
    """Scoring: ``on`` uses echo+logprobs, ``off`` parses generations, ``auto`` probes the server once."""
    top_logprobs: int = Field(20, ge=1, le=1_000_000)
    """Alternatives asked for when scoring one-token answers from a single next-token request (a continuation not
    listed is echoed instead). vLLM caps this at its ``--max-logprobs`` (20 by default); llama.cpp takes any number
    (the ``llamacpp`` backend asks for 1,000: the echo it saves costs a vocabulary sort per prompt token)."""
    fallback_max_tokens: int = Field(16, ge=1)
    """Tokens generated per request when scoring falls back to parsing generations."""
    context_length: int | None = Field(None, ge=1)
    """The model's context window in tokens, when known (the server does not report it)."""
    bos_text: str = ""
    """Text prepended to every scoring prompt, e.g. the model's BOS token. llama-cpp-python's
    server shifts echoed logprobs by one token unless the prompt starts with the BOS token; for
    SmolLM2 that is ``"<|im_start|>"``. The probe detects a shifted server either way."""

    model_config = ConfigDict(strict=True)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v or ""):
            raise Invalid(f"base_url must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v:
            raise Invalid("model must be a non-empty name")
        return v


def usage_count(value: Any) -> int:
    """A usage token count as reported, 0 when missing or not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def normalise_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop if s) if i != -1]
    return text[:min(cuts)] if cuts else text


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI ``{"error": {"message": ...}}`` or raw)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    err = body.get("error", body.get("detail", body)) if isinstance(body, dict) else body
    return str(err.get("message", err) if isinstance(err, dict) else err)[:300]


def describe_error(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else f"cannot connect ({exc})"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


