"""Build the `LM` a `ModelSpec` describes: local weights (``hf``), an OpenAI-compatible server (``api``) or vLLM."""

from __future__ import annotations

import logging

from adaptlab.errors import ConfigError
from adaptlab.lm.base import LM
from adaptlab.models.convert import DEFAULT_MODEL
from adaptlab.models.prices import PRICES_SOURCE
from adaptlab.models.spec import ModelSpec

log = logging.getLogger(__name__)


def build_lm(spec: ModelSpec | str) -> LM:
    """The LM every strategy scores through (a bare name means a local model with default settings).

    ``hf``: the weights loaded locally (`adaptlab.models.load_model`) behind the prefix-cached scoring engine.
    ``api``: the server at ``base_url`` serving ``name``; the key is read from ``api_key_env`` at request time
    and never stored; its ``token_price`` is the spec's (`ModelSpec.token_price`: the explicit ``price``, else
    the pinned table's), with ``price_source`` naming which. ``vllm``: a vLLM engine on a CUDA GPU (optional
    extra) for large models and big evaluation sets.
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
