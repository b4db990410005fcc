"""API faults: `APILM` against a real local HTTP server that misbehaves on purpose.

`FaultServer` is a small OpenAI-compatible completions server (``http.server``) with a fake but
consistent tokenizer and logprobs, so the real client code runs end to end. Its ``mode`` makes it
sleep past the timeout, answer 429 with ``Retry-After``, answer 500, send malformed JSON, close the
connection without answering, or SIGKILL its own process mid-run (run as a subprocess:
``python tests/test_api_faults.py MODE [ARG]``). Every test checks that retries are bounded (at most
``1 + max_retries`` requests per input), that the wall time is bounded, and what the error says.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TOKEN = re.compile(r"\s*\S+|\s+")
GENERATED = " yes"


def token_logprob(token: str) -> float:
    """A deterministic logprob in (-4.05, -0.05] for a token."""
    return -(zlib.crc32(token.encode()) % 1000) / 250 - 0.05


def completion(payload: dict) -> dict:
    """A legacy ``/v1/completions`` answer: greedy ``GENERATED``, echo + logprobs when asked."""
    prompt = str(payload.get("prompt", ""))
    gen_lp = token_logprob(GENERATED)
    choice: dict = {"index": 0, "text": GENERATED, "finish_reason": "length"}
    n_prompt = len(TOKEN.findall(prompt))
    if payload.get("logprobs"):
        if payload.get("echo"):
            tokens = TOKEN.findall(prompt) + [GENERATED]
            offsets, pos = [], 0
            for tok in tokens:
                offsets.append(pos)
                pos += len(tok)
            values = [None] + [token_logprob(t) for t in tokens[1:]]
            choice["text"] = prompt + GENERATED
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets}
        else:
            choice["logprobs"] = {"tokens": [GENERATED], "token_logprobs": [gen_lp], "text_offset": [len(prompt)]}
    return {"id": "cmpl-1", "object": "text_completion", "choices": [choice],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}}


class FaultServer:
    """A completions server on 127.0.0.1 whose answers depend on ``mode`` (see module docstring).

    ``requests`` records ``(path, prompt, monotonic time, headers)`` per request; with ``log_file`` each
    request is also appended there (flushed) so it survives the process being killed.
    """

    def __init__(self, mode: str = "ok", *, arg: float = 0.0, log_file: Path | None = None) -> None:
        self.mode, self.arg, self.log_file = mode, arg, log_file
        self.requests: list[tuple[str, str, float, dict]] = []
        self.body: object = None
        """Mode ``body``: the JSON (or bytes) every completion request is answered with."""
        self._lock = threading.Lock()
        self._answered = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)) or 0)
                try:
                    payload = json.loads(raw or b"{}")
                except ValueError:
                    payload = {}
                outer._serve(self, payload if isinstance(payload, dict) else {})

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that gave up: not our concern
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, h: BaseHTTPRequestHandler, payload: dict) -> None:
        prompt = str(payload.get("prompt", payload.get("messages", "")))
        with self._lock:
            self.requests.append((h.path, prompt, time.monotonic(), dict(h.headers)))
            if self.log_file is not None:
                with open(self.log_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"path": h.path, "prompt": prompt}) + "\n")
            answered = self._answered
        if "tokenize" in h.path:
            return self._send(h, 404, {"error": {"message": "not found"}})
        mode = self.mode
        if mode == "die_after" and answered >= self.arg:
            os.kill(os.getpid(), signal.SIGKILL)  # killed mid-request: the client sees the connection drop
        if mode == "slow":
            time.sleep(self.arg)
        if mode == "429":
            return self._send(h, 429, {"error": {"message": "rate limited"}}, {"Retry-After": self._retry_after()})
        if mode == "500" or (mode == "500_on" and "poison" in prompt):
            return self._send(h, 500, {"error": {"message": "internal server error"}})
        if mode == "flaky" and sum(1 for r in self.requests if r[1] == prompt) <= self.arg:
            return self._send(h, 500, {"error": {"message": "try again"}})
        if mode == "malformed":
            return self._send(h, 200, b'{"choices": [{"text": "trunc')
        if mode == "close":
            h.close_connection = True  # no status line at all: the client sees a dropped connection
            return None
        if mode == "body":
            return self._send(h, 200, self.body)
        if mode == "echo_key":  # a server that (wrongly) quotes the request's credentials back
            return self._send(h, 400, {"error": {"message": f"bad request from {h.headers.get('Authorization')}"}})
        with self._lock:
            self._answered += 1
        return self._send(h, 200, completion(payload))

    def _retry_after(self) -> str:
        if self.arg < 0:  # an HTTP date |arg| seconds ahead
            return formatdate(time.time() + abs(self.arg) + 1, usegmt=True)
        return str(self.arg)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: object, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def start(self) -> FaultServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def per_prompt(self, path_suffix: str = "/completions") -> Counter:
        return Counter(p for path, p, _, _ in self.requests if path.endswith(path_suffix))


@pytest.fixture
def server() -> Iterator:
    started: list[FaultServer] = []

    def make(mode: str = "ok", arg: float = 0.0) -> FaultServer:
        started.append(FaultServer(mode, arg=arg).start())
        return started[-1]

    yield make
    for s in started:
        s.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_server(mode: str, arg: float, log_file: Path) -> tuple[subprocess.Popen, str]:
    """This module run as a server in its own process; returns (process, base_url)."""
    proc = subprocess.Popen([sys.executable, __file__, mode, str(arg), str(log_file)], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()  # "PORT <n>" once listening
    assert line.startswith("PORT "), line
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


# ------------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------------

FAST = {"backoff_base_s": 0.02, "max_backoff_s": 0.3}


def test_fake_server_scores_through_the_real_client(server) -> None:
    from adaptlab.lm.api import APILM
    from adaptlab.lm.base import LoglikelihoodRequest

    srv = server("ok")
    lm = APILM(base_url=srv.base_url, model="fake", timeout_s=5.0, **FAST)
    [r] = lm.loglikelihood([LoglikelihoodRequest("Is it good? Answer:", (" alpha", " beta gamma"))])
    assert r.logprobs == pytest.approx((token_logprob(" alpha"), token_logprob(" beta") + token_logprob(" gamma")))
    assert r.token_counts == (1, 2) and "parsed_fallback" not in lm.usage.extra  # echo scoring was trusted


def test_sleeping_past_the_timeout_is_retried_then_fails_in_bounded_time(server) -> None:
    from adaptlab.lm.api import APILM, BackendError

    srv = server("slow", 2.0)
    lm = APILM(base_url=srv.base_url, timeout_s=0.25, max_retries=2, concurrency=2, **FAST)
    prompts = [f"prompt {i}" for i in range(5)]
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        lm.generate(prompts, max_new_tokens=2)
    elapsed = time.monotonic() - start
    # two workers, three attempts each (0.25 s timeout + <= 0.3 s backoff), queued prompts cancelled
    assert elapsed < 4.0
    assert "timed out" in str(err.value) and err.value.transport
    counts = srv.per_prompt()
    assert counts and all(n <= 1 + 2 for n in counts.values())
    assert len(counts) < len(prompts)  # prompts still queued at the first failure never reach the server
    assert err.value.partial == [None] * len(prompts)


def test_429_retry_after_is_honoured_and_bounded(server) -> None:
    from adaptlab.lm.api import APILM, BackendError

    srv = server("429", 0.3)
    lm = APILM(base_url=srv.base_url, max_retries=2, timeout_s=5.0, backoff_base_s=0.01, max_backoff_s=5.0)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        lm.generate(["only one"])
    times = [t for _, _, t, _ in srv.requests]
    assert len(times) == 3 and all(b - a >= 0.28 for a, b in zip(times, times[1:]))  # waited as told
    assert time.monotonic() - start < 3.0
    assert "HTTP 429" in str(err.value) and "rate limited" in str(err.value) and err.value.status == 429


def test_429_with_an_http_date_is_capped_by_max_backoff(server) -> None:
    from adaptlab.lm.api import APILM, BackendError

    srv = server("429", -600)  # Retry-After: a date ten minutes ahead
    lm = APILM(base_url=srv.base_url, max_retries=1, timeout_s=5.0, backoff_base_s=0.01, max_backoff_s=0.4)
    start = time.monotonic()
    with pytest.raises(BackendError):
        lm.generate(["x"])
    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 3.0 and len(srv.requests) == 2


def test_transient_500s_are_retried_until_each_input_succeeds(server) -> None:
    from adaptlab.lm.api import APILM

    srv = server("flaky", 2)  # every prompt fails twice, then succeeds
    lm = APILM(base_url=srv.base_url, max_retries=3, concurrency=3, timeout_s=5.0, **FAST)
    prompts = [f"p{i}" for i in range(6)]
    assert lm.generate(prompts, max_new_tokens=1) == [GENERATED] * 6
    assert srv.per_prompt() == Counter({p: 3 for p in prompts})
    assert lm.usage.requests == 6


@pytest.mark.parametrize("mode, expected", [("500", "HTTP 500"), ("malformed", "malformed JSON"),
                                            ("close", "Server disconnected")])
def test_persistent_faults_end_in_a_backend_error_after_bounded_retries(server, mode: str, expected: str) -> None:
    from adaptlab.lm.api import APILM, BackendError

    srv = server(mode)
    lm = APILM(base_url=srv.base_url, max_retries=2, concurrency=2, timeout_s=5.0, **FAST)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        lm.generate([f"q{i}" for i in range(4)])
    assert time.monotonic() - start < 3.0
    assert expected in str(err.value) and "after 2 retries" in str(err.value)
    assert srv.base_url in str(err.value)
    counts = srv.per_prompt()
    assert all(n <= 3 for n in counts.values()) and sum(counts.values()) <= 3 * 4
    assert err.value.transport == (mode == "close")


def test_partial_results_survive_a_failing_input(server) -> None:
    from adaptlab.lm.api import APILM, BackendError

    srv = server("500_on")  # prompts containing "poison" always get HTTP 500
    lm = APILM(base_url=srv.base_url, max_retries=1, concurrency=1, timeout_s=5.0, **FAST)
    prompts = ["a", "b", "c poison", "d", "e"]
    seen: list[int] = []
    with pytest.raises(BackendError) as err:
        lm.generate(prompts, max_new_tokens=1, on_result=lambda i, _: seen.append(i))
    assert err.value.partial[:2] == [GENERATED, GENERATED]
    assert err.value.partial[2] is None and "stopped after" in str(err.value)
    assert {i for i, r in enumerate(err.value.partial) if r is not None} == set(seen)
    assert srv.per_prompt()["c poison"] == 2


def test_connection_refused_through_the_cli_is_one_line(tmp_path: Path) -> None:
    try:
        from test_bad_input import assert_one_line_error, rows, run_cli, write_task
    except ImportError:  # tests/ imported as a package
        from tests.test_bad_input import assert_one_line_error, rows, run_cli, write_task

    (tmp_path / "train.jsonl").write_text(rows(6))
    (tmp_path / "test.jsonl").write_text(rows(3))
    start = time.monotonic()
    out = run_cli("prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "o"), "--strategy", "zero_shot",
                  "--backend", "api", "--api-base", f"http://127.0.0.1:{free_port()}/v1", "--model", "fake")
    assert time.monotonic() - start < 30  # default client: 3 retries, backoff 0.5 s doubling
    assert_one_line_error(out, "connection refused", "unreachable after 3 retries", "is the server running")


def test_server_killed_mid_run_keeps_partial_results(tmp_path: Path) -> None:
    from adaptlab.lm.api import APILM, BackendError
    from adaptlab.lm.base import LoglikelihoodRequest

    log_file = tmp_path / "requests.jsonl"
    # the probe takes 2 requests, each scored request 2 (one per continuation): die at the 9th
    proc, base_url = subprocess_server("die_after", 8, log_file)
    try:
        lm = APILM(base_url=base_url, model="fake", concurrency=1, max_retries=2, timeout_s=5.0, **FAST)
        reqs = [LoglikelihoodRequest(f"item {i} is", (" good", " bad")) for i in range(6)]
        got: dict[int, object] = {}
        start = time.monotonic()
        with pytest.raises(BackendError) as err:
            lm.loglikelihood(reqs, on_result=lambda i, r: got.__setitem__(i, r))
        assert time.monotonic() - start < 5.0
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err.value.transport and "unreachable" in str(err.value) and "stopped after 3/6" in str(err.value)
    partial = err.value.partial
    assert [r is not None for r in partial] == [True] * 3 + [False] * 3
    assert all(math.isfinite(r.logprobs[0]) for r in partial[:3]) and set(got) == {0, 1, 2}
    seen = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(seen) == 9  # the request that met the kill; the retries found nobody listening
    assert all(n <= 3 for n in Counter(r["prompt"] for r in seen).values())


def test_random_response_bodies_give_results_or_a_backend_error(server) -> None:
    """Whatever JSON a server answers with 200, the client returns well-typed results or BackendError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from adaptlab.lm.api import APILM, BackendError
    from adaptlab.lm.base import ContinuationScores, LoglikelihoodRequest

    srv = server("body")
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=5))
    junk = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(["text", "tokens", "x"]), inner, max_size=2), max_leaves=5)
    logprobs = st.fixed_dictionaries({}, optional={
        "tokens": st.lists(st.text(max_size=4) | st.integers(), max_size=4) | junk,
        "token_logprobs": st.lists(st.none() | st.floats(-5, 0) | st.text(max_size=2), max_size=4) | junk,
        "text_offset": st.lists(st.integers(-2, 40) | st.none(), max_size=4) | junk})
    choice = st.fixed_dictionaries({}, optional={"text": st.text(max_size=8) | junk, "logprobs": logprobs | junk,
                                                 "message": st.fixed_dictionaries({"content": st.text(max_size=5)
                                                                                   | junk})})
    body = st.one_of(junk, st.fixed_dictionaries({"choices": st.lists(choice | junk, max_size=2) | junk},
                                                 optional={"usage": st.fixed_dictionaries({}, optional={
                                                     "prompt_tokens": leaf, "completion_tokens": leaf}) | junk}))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=body, mode=st.sampled_from(["completions", "chat"]), logprobs=st.sampled_from(["auto", "on", "off"]))
    def check(body: object, mode: str, logprobs: str) -> None:
        srv.body = body
        lm = APILM(base_url=srv.base_url, mode=mode, logprobs=logprobs, max_retries=0, timeout_s=5.0)
        try:
            out = lm.generate(["hello"], max_new_tokens=3)
            assert len(out) == 1 and isinstance(out[0], str)
        except BackendError:
            pass
        try:
            scores = lm.loglikelihood([LoglikelihoodRequest("ctx", (" a", " bb"))])
            assert len(scores) == 1 and isinstance(scores[0], ContinuationScores)
            assert all(isinstance(x, float) for x in scores[0].logprobs)
            assert all(isinstance(n, int) for n in scores[0].token_counts)
        except BackendError:
            pass
        lm.close()

    check()


if __name__ == "__main__":  # python tests/test_api_faults.py MODE ARG LOG_FILE: serve until killed
    fault = FaultServer(sys.argv[1], arg=float(sys.argv[2]), log_file=Path(sys.argv[3]))
    print(f"PORT {fault.port}", flush=True)
    fault.httpd.serve_forever()
