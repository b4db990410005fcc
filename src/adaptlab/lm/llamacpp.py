"""A real llama.cpp server (``llama-cpp-python[server]``) that this process starts for a GGUF, and the `APILM`
that talks to it (`LlamaCppLM`, built by ``backend: llamacpp``).

One server runs per (GGUF, ``n_ctx``, threads) per process, on 127.0.0.1 at a free port, shared by every LM
built for it; it stops when its last LM is closed (or collected), and at interpreter exit at the latest
(terminate, then kill). The server also exits by itself when this process dies without cleaning up (its
watchdog thread sees the parent gone). Scoring uses echo logprobs, so the server runs with ``logits_all``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO

import httpx

from adaptlab.errors import ModelError
from adaptlab.lm.api import APILM
from adaptlab.lm.api_config import APIConfig

LLAMACPP_TOP_LOGPROBS = 1000
"""Next-token alternatives asked of a server this backend starts: labels outside them are echoed, and
llama-cpp-python sorts the whole vocabulary for every echoed prompt token (~0.1-0.2 s each for SmolLM2)."""

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
_PORT_ATTEMPTS = 3
_PARENT_ENV = "ADAPTLAB_LLAMACPP_PARENT"
_LOG_ENV = "ADAPTLAB_LLAMACPP_LOG"
# Runs `python -m llama_cpp.server ARGS` with a watchdog thread that ends the server (and deletes its log) once its
# parent is gone without stopping it (killed: no atexit).
_LAUNCHER = (
    "import os, runpy, threading, time\n"
    f"parent = int(os.environ['{_PARENT_ENV}'])\n"
    "def watch():\n"
    "    while os.getppid() == parent:\n"
    "        time.sleep(1.0)\n"
    "    try:\n"
    f"        os.unlink(os.environ['{_LOG_ENV}'])\n"
    "    except OSError:\n"
    "        pass\n"
    "    os._exit(0)\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


def default_threads() -> int:
    """Half the CPUs this process may use, at least 1 (llama.cpp threads spin: oversubscribing a CPU is slow)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_process(proc: subprocess.Popen, log_file: IO[bytes], log_path: Path) -> None:
    """Terminate, then kill after `STOP_TIMEOUT_S`; close and delete the log (a finaliser: never raises)."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
    except OSError:
        pass
    finally:
        log_file.close()
        log_path.unlink(missing_ok=True)


class LlamaCppServer:
    """One ``llama_cpp.server`` process serving ``gguf``; started by the constructor, ready when it returns."""

    def __init__(self, gguf: Path, *, n_ctx: int = 2048, threads: int = 1, logits_all: bool = True) -> None:
        self.gguf, self.n_ctx, self.threads = Path(gguf), n_ctx, threads
        self.logits_all = logits_all
        """Keep every prompt token's logits (echo logprobs scoring); off when scoring parses generations."""
        self.users = 0
        """LMs holding this server (`acquire` / `release`)."""
        for attempt in range(_PORT_ATTEMPTS):
            self.port = _free_port()
            self._launch()
            try:
                self._wait_ready()
                return
            except ModelError:
                in_use = "address already in use" in self.log_tail().lower()
                self.stop()
                if not in_use or attempt + 1 == _PORT_ATTEMPTS:  # another process took the port: try another
                    raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _launch(self) -> None:
        cmd = [sys.executable, "-c", _LAUNCHER, "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--logits_all", str(self.logits_all), "--verbose", "False"]
        fd, name = tempfile.mkstemp(prefix="adaptlab-llamacpp-", suffix=".log")
        self.log_path = Path(name)
        log_file = os.fdopen(fd, "wb")
        env = {**os.environ, _PARENT_ENV: str(os.getpid()), _LOG_ENV: str(self.log_path)}
        try:
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)  # Ctrl-C reaches us, not the server
        except OSError as exc:
            log_file.close()
            self.log_path.unlink(missing_ok=True)
            raise ModelError(f"cannot start the llama.cpp server: {exc}", field="model") from exc
        self._finalizer = weakref.finalize(self, _stop_process, self.proc, log_file, self.log_path)
        log.info("starting llama.cpp server (pid %d) for %s on port %d, n_ctx %d, %d thread(s)",
                 self.proc.pid, self.gguf.name, self.port, self.n_ctx, self.threads)

    def _wait_ready(self) -> None:
        """Poll ``/v1/models`` until it answers; ModelError (with the log's tail) if the process exits first or
        `START_TIMEOUT_S` passes."""
        start = time.monotonic()
        while time.monotonic() - start < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise ModelError(f"the llama.cpp server for {self.gguf.name} exited with code {self.proc.returncode} "
                                 f"before answering; its log ends: {self.log_tail()}", field="model")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    log.info("llama.cpp server for %s ready in %.1fs", self.gguf.name, time.monotonic() - start)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise ModelError(f"the llama.cpp server for {self.gguf.name} did not answer within {START_TIMEOUT_S:.0f}s; "
                         f"its log ends: {self.log_tail()}", field="model")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's log, joined on one line."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text[-lines:] if line.strip()) or "(empty log)"

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the process (terminate, then kill) and delete its log; idempotent."""
        self._finalizer()


_SERVERS: dict[tuple[str, int, int, bool], LlamaCppServer] = {}
_LOCK = threading.Lock()


def acquire_server(gguf: Path, *, n_ctx: int = 2048, threads: int | None = None,
                   logits_all: bool = True) -> LlamaCppServer:
    """The process's running server for (gguf, n_ctx, threads, logits_all), started if needed; one more user."""
    threads = threads or default_threads()
    key = (str(Path(gguf).resolve()), n_ctx, threads, logits_all)
    with _LOCK:
        server = _SERVERS.get(key)
        if server is None or not server.running:
            if server is not None:
                log.warning("the llama.cpp server for %s (pid %d) had exited; starting another",
                            server.gguf.name, server.pid)
                server.stop()
            server = _SERVERS[key] = LlamaCppServer(Path(key[0]), n_ctx=n_ctx, threads=threads,
                                                    logits_all=logits_all)
        server.users += 1
        return server


def release_server(server: LlamaCppServer) -> None:
    """One user fewer; the last one stops the server."""
    with _LOCK:
        server.users -= 1
        if server.users > 0:
            return
        for key, value in list(_SERVERS.items()):
            if value is server:
                del _SERVERS[key]
    server.stop()


class LlamaCppLM(APILM):
    """`APILM` (the OpenAI-compatible client, unchanged) against a `LlamaCppServer`; `close` releases the server."""

    def __init__(self, server: LlamaCppServer, config: APIConfig, *, name: str) -> None:
        super().__init__(config)
        self.name = f"llamacpp:{name}"
        self.server = server
        self._release = weakref.finalize(self, release_server, server)

    def close(self) -> None:
        """Close the HTTP pool and release the server (stopped when no other LM uses it)."""
        super().close()
        self._release()


def llamacpp_lm(gguf: Path, config: APIConfig, *, name: str, n_ctx: int = 2048,
                threads: int | None = None) -> LlamaCppLM:
    """A `LlamaCppLM` on the shared server for ``gguf`` (``config.base_url`` is replaced by the server's)."""
    # parsing generations (logprobs "off") needs no per-token logits: over Gemma's 262k vocabulary they cost
    # as much as the model itself, and llama-cpp-python's echo sorts the whole vocabulary per prompt token
    server = acquire_server(gguf, n_ctx=n_ctx, threads=threads, logits_all=config.logprobs != "off")
    try:
        settings = {**config.model_dump(), "base_url": server.base_url}
        if "top_logprobs" not in config.model_fields_set:  # llama.cpp lists any number; each echo costs more
            settings["top_logprobs"] = LLAMACPP_TOP_LOGPROBS
        return LlamaCppLM(server, APIConfig(**settings), name=name)
    except BaseException:
        release_server(server)
        raise
