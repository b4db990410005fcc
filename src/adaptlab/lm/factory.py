"""Build the `LM` a `ModelSpec` describes: local weights (``hf``), an OpenAI-compatible server (``api``), vLLM, or a
llama.cpp server this process starts (``llamacpp``)."""

from __future__ import annotations

import logging

from adaptlab.errors import ConfigError
from adaptlab.lm.base import LM
from adaptlab.models.convert import DEFAULT_MODEL
from adaptlab.models.prices import PRICES_SOURCE
from adaptlab.models.spec import ModelSpec

log = logging.getLogger(__name__)

LLAMACPP_API = {"concurrency": 1, "timeout_s": 600.0}
"""``llamacpp`` defaults of the spec's ``api`` options: llama-cpp-python answers one request at a time, so more in
flight only queue (and time out) behind it; echo scoring of a long prompt over a large vocabulary takes minutes."""
_NO_KEY_ENV = "ADAPTLAB_LLAMACPP_API_KEY"
"""The local server takes no key: a variable nobody sets, so no ``OPENAI_API_KEY`` is ever sent to it."""


def build_lm(spec: ModelSpec | str) -> LM:
    """The LM every strategy scores through (a bare name means a local model with default settings).

    ``hf``: the weights loaded locally (`adaptlab.models.load_model`) behind the prefix-cached scoring engine.
    ``api``: the server at ``base_url`` serving ``name``; the key is read from ``api_key_env`` at request time
    and never stored; its ``token_price`` is the spec's (`ModelSpec.token_price`: the explicit ``price``, else
    the pinned table's), with ``price_source`` naming which. ``vllm``: a vLLM engine on a CUDA GPU (optional
    extra) for large models and big evaluation sets. ``llamacpp``: a llama.cpp server started here for the model's
    GGUF (`adaptlab.lm.llamacpp`), reached through the same client as ``api``; self-hosted, so priced by ``hardware``.
    """
    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    if spec.backend == "hf":
        from adaptlab.models.loading import check_model_name, load_model

        check_model_name(spec.name)  # before HFLM imports torch
        from adaptlab.lm.hf import HFLM

        loaded = load_model(spec.name, dtype=spec.dtype, device=spec.device, trust_remote_code=spec.trust_remote_code,
                            allow_pickle=spec.allow_pickle)
        return HFLM.from_loaded(loaded, batch_size=spec.batch_size)
    if spec.backend == "llamacpp":
        return _llamacpp_lm(spec)
    if spec.backend == "api":
        from adaptlab.lm.api import APILM
        from adaptlab.lm.api_config import APIConfig

        if not spec.base_url:
            raise ConfigError("the api backend needs a server URL", field="base_url",
                              hint="give base_url (--base-url http://HOST:PORT/v1)")
        # llama.cpp servers shift echoed logprobs by one token unless the prompt starts with the
        # model's BOS text; for the bundled SmolLM2 that is "<|im_start|>".
        bos_text = "<|im_start|>" if spec.name.startswith("smollm2") else ""
        lm = APILM(APIConfig(base_url=spec.base_url, model=spec.name, api_key_env=spec.api_key_env,
                             bos_text=bos_text, **spec.api.model_dump()))
        lm.token_price = spec.token_price()
        if lm.token_price is not None:
            lm.price_source = "model spec price" if spec.price is not None else PRICES_SOURCE
        return lm
    from adaptlab.lm.vllm import VLLMLM
    from adaptlab.models.convert import ensure_converted

    path = str(ensure_converted()) if spec.name == DEFAULT_MODEL else spec.name
    return VLLMLM(path, dtype="auto" if spec.dtype == "float32" else spec.dtype,
                  trust_remote_code=spec.trust_remote_code, name=spec.name)


def _llamacpp_lm(spec: ModelSpec) -> LM:
    from adaptlab.lm.api_config import APIConfig
    from adaptlab.lm.llamacpp import llamacpp_lm
    from adaptlab.models.convert import gguf_for, gguf_path

    gguf = gguf_for(spec.name)
    # llama-cpp-python's echo drops a leading BOS token and is shifted by one token without one. Gemma's GGUF adds
    # its <bos> itself (sending "<bos>" would double it); SmolLM2's adds none, so its BOS text is sent.
    smollm2 = gguf_path()
    bos_text = "<|im_start|>" if smollm2 is not None and gguf == smollm2.resolve() else ""
    api = {**LLAMACPP_API, **spec.api.model_dump(exclude_unset=True)}
    config = APIConfig(model=spec.name, api_key_env=_NO_KEY_ENV, bos_text=bos_text, context_length=spec.n_ctx,
                       **api)
    lm = llamacpp_lm(gguf, config, name=spec.name, n_ctx=spec.n_ctx, threads=spec.threads)
    if spec.price is not None:  # an explicit price (e.g. to price it as the API it stands in for) is honoured
        lm.token_price, lm.price_source = spec.price, "model spec price"
    return lm
