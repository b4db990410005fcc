"""`ModelSpec`: which model a strategy adapts and how it is served (local weights, an API server, vLLM).

The spec is what an experiment (or a command line) says about a model; `adaptlab.lm.factory.build_lm` turns
it into an `LM`, `adaptlab.models.loading.load_model` into trainable weights. `identity` is the part that
changes results, so it enters cell keys: resuming against another server never reuses cells. A price
changes what a run costs, not its results, so it stays out of `identity`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from adaptlab.config import ConfigModel, Invalid
from adaptlab.models.convert import DEFAULT_MODEL, gguf_name
from adaptlab.models.prices import TokenPrice, price_for

BACKENDS = ("hf", "api", "vllm", "llamacpp")


class ApiOptions(ConfigModel):
    """How hard the ``api`` backend tries each request; a cell whose requests still fail is recorded as failed
    and the run goes on."""

    timeout_s: float = 60.0
    """Per-request timeout (connect, read, write) in seconds, in (0, 3600]."""
    max_retries: int = 3
    """Retries after the first attempt (connection errors, timeouts, malformed JSON, 429, 5xx), 0..20."""
    concurrency: int = 4
    """Requests in flight at once."""
    logprobs: Literal["auto", "on", "off"] = "auto"
    """How classification is scored: ``on`` = exact log-likelihoods from echoed prompt logprobs (completions
    servers that offer them), ``off`` = parse a short greedy answer (what a chat-only API such as OpenAI's
    offers; one request per query, no full-vocabulary logits), ``auto`` = probe the server once."""

    @field_validator("timeout_s")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0 < v <= 3600:
            raise Invalid("timeout_s must be in (0, 3600] seconds", hint="e.g. 60")
        return v

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if not 0 <= v <= 20:
            raise Invalid("max_retries must be in 0..20", hint="e.g. 3")
        return v

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int) -> int:
        if v < 1:
            raise Invalid("concurrency must be >= 1", hint="e.g. 4")
        return v


class Hardware(ConfigModel):
    """What serving (and training) a self-hosted model costs: the machine it runs on and its price per hour. A
    query then costs the measured seconds of hardware per query (1 / batched throughput) x this price."""

    key_aliases = {"price": "price_per_hour", "per_hour": "price_per_hour", "gpu": "device"}

    price_per_hour: float = Field(ge=0, allow_inf_nan=False)
    """$ per hour of the machine serving this model (e.g. 0.10 for a CPU VM, 1.2 for an A10G)."""
    device: str = "cpu"
    """What the machine is, for the report (``2-core CPU``, ``A10G``, ``H100``)."""


class ModelSpec(ConfigModel):
    """A model and how to reach it."""

    key_aliases = {"api_base": "base_url", "url": "base_url", "model": "name", "pricing": "price"}

    name: str = DEFAULT_MODEL
    """Model name (``adaptlab models``), a Hugging Face id or a local folder; for ``api``, the name the server
    knows the model by."""
    backend: Literal["hf", "api", "vllm", "llamacpp"] = "hf"
    """``hf``: local weights with the shared-prefix cache; ``api``: an OpenAI-compatible server at ``base_url``;
    ``vllm``: a vLLM engine on a CUDA GPU; ``llamacpp``: a llama.cpp server this process starts for a GGUF
    (``smollm2-135m-instruct``, ``gemma3-270m`` or a ``.gguf`` path), priced by ``hardware``."""
    base_url: str | None = None
    """``api`` backend: the server's root, e.g. ``http://127.0.0.1:8080/v1``."""
    api_key_env: str = "OPENAI_API_KEY"
    """``api`` backend: the environment variable holding the key (the key itself is never stored)."""
    api: ApiOptions = Field(default_factory=ApiOptions)
    """``api`` backend: per-request timeout, retries and concurrency."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights dtype of local models."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``."""
    trust_remote_code: bool = False
    """Let a model folder run its own Python code (trusted sources only)."""
    allow_pickle: bool = False
    """Allow pickle (``.bin``) weights, which can run code when loaded (trusted sources only)."""
    batch_size: int = 32
    """Sequences scored at once by the local backend."""
    price: TokenPrice | None = None
    """$ per 1M input and output tokens of an API model; default: the pinned table's entry for ``name``, if any
    (`adaptlab.models.prices`)."""
    n_ctx: int = Field(2048, ge=16)
    """``llamacpp`` backend: the server's context window in tokens (its logits buffer grows with it)."""
    threads: int | None = Field(None, ge=1)
    """``llamacpp`` backend: CPU threads of the server; null: half the CPUs, at least 1."""
    hardware: Hardware | None = None
    """A self-hosted model's machine and $ per hour (a query costs its measured seconds x this price); null: the
    scenario's ``price_per_hour``. Ignored for a model priced per token."""

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise Invalid(f"base_url must be an http(s) URL, got {v!r}", hint="e.g. http://127.0.0.1:8080/v1")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", v.strip().lower()):
            raise Invalid(f"unknown device '{v}'", hint="valid: cpu, cuda, cuda:N, auto")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int) -> int:
        if v < 1:
            raise Invalid("batch_size must be >= 1")
        return v

    def token_price(self) -> TokenPrice | None:
        """The explicit ``price``, else the pinned table's price for ``name`` (None when neither is known)."""
        return self.price if self.price is not None else price_for(self.name)

    def hardware_price(self) -> dict[str, Any] | None:
        """``{"price_per_hour", "device"}`` of the model's own hardware block (None: the scenario's price)."""
        return None if self.hardware is None else self.hardware.model_dump()

    def identity(self) -> dict[str, Any]:
        """What changes this model's results (part of cell keys); only non-default serving is named, so the keys
        of local float32 runs stay as they were before models had specs."""
        out: dict[str, Any] = {}
        if self.backend == "llamacpp":  # not the port: it changes every run
            out["backend"] = {"name": "llamacpp", "gguf": gguf_name(self.name), "n_ctx": self.n_ctx}
        elif self.backend != "hf":
            out["backend"] = {"name": self.backend, "base_url": self.base_url}
        if self.dtype != "float32":
            out["dtype"] = self.dtype
        if self.backend in ("api", "llamacpp") and self.api.logprobs != "auto":
            out["scoring"] = self.api.logprobs  # exact log-likelihoods and parsed answers differ
        return out
