"""Build an `LM` for a model name and a backend (`hf` local weights, `api` OpenAI-compatible server)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from adaptlab.errors import ConfigError
from adaptlab.lm.base import LM

log = logging.getLogger(__name__)

Backend = Literal["hf", "api", "vllm"]
BACKENDS = ("hf", "api", "vllm")


def build_lm(
    model: str,
    *,
    backend: str = "hf",
    dtype: str = "float32",
    device: str = "cpu",
    batch_size: int = 32,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    api_mode: str = "completions",
    api_options: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> LM:
    """The LM every strategy scores through.

    ``hf``: the model's weights loaded locally (`adaptlab.models.load_model`) behind the prefix-cached
    scoring engine; ``trust_remote_code`` / ``allow_pickle`` (both off by default) let a model folder
    run its own code / load pickle weights. ``api``: an OpenAI-compatible server at ``base_url``
    serving ``model``; the key is read from the environment variable ``api_key_env`` at request time
    and never stored; ``api_options`` sets further `APIConfig` fields (``timeout_s``, ``max_retries``,
    ``concurrency``). ``vllm``: a vLLM engine on a CUDA GPU (optional extra) for large models and big
    evaluation sets.
    """
    if backend == "hf":
        from adaptlab.models import check_model_name, load_model

        check_model_name(model)  # before HFLM imports torch
        from adaptlab.lm.hf import HFLM

        loaded = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                            allow_pickle=allow_pickle)
        return HFLM.from_loaded(loaded, batch_size=batch_size)
    if backend == "api":
        from adaptlab.lm.api import APIConfig, APILM

        if not base_url:
            raise ConfigError("the api backend needs a server URL", field="base_url",
                              hint="pass --api-base http://HOST:PORT/v1")
        # llama.cpp servers shift echoed logprobs by one token unless the prompt starts with the
        # model's BOS text; for the bundled SmolLM2 that is "<|im_start|>".
        bos_text = "<|im_start|>" if model.startswith("smollm2") else ""
        return APILM(APIConfig(base_url=base_url, model=model, api_key_env=api_key_env, mode=api_mode,
                               bos_text=bos_text, **dict(api_options or {})))
    if backend == "vllm":
        from adaptlab.lm.vllm import VLLMLM
        from adaptlab.models import ensure_converted

        path = str(ensure_converted()) if model == "smollm2-135m-instruct" else model
        return VLLMLM(path, dtype="auto" if dtype == "float32" else dtype, trust_remote_code=trust_remote_code,
                      name=model)
    from adaptlab.errors import closest

    guess = closest(backend, BACKENDS)
    raise ConfigError(f"unknown backend '{backend}'", field="backend",
                      hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(BACKENDS))
