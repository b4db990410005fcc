"""APILM against a real llama.cpp server (and tiny local HTTP servers for failure modes)."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adaptlab.errors import ConfigError
from adaptlab.lm.api import APILM
from adaptlab.lm.api_config import APIConfig, BackendError
from adaptlab.lm.base import LM, LoglikelihoodRequest

try:
    from llama_server import free_port, llama_server, llama_server_factory  # noqa: F401
except ImportError:  # tests/ imported as a package
    from tests.llama_server import free_port, llama_server, llama_server_factory  # noqa: F401

FAST = {"backoff_base_s": 0.02, "max_backoff_s": 0.5, "timeout_s": 5.0}
SECRET = "sk-adaptlab-PLANTED-7f3a9c"


# ---------------------------------------------------------------- local scripted HTTP servers
class _Scripted:
    """A tiny HTTP server on 127.0.0.1 answering each POST from a script of (status, headers, body)."""

    def __init__(self, script: Callable[[int, dict], tuple[int, dict[str, str], object]]) -> None:
        self.requests: list[tuple[float, dict[str, str], dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                n = len(outer.requests)
                outer.requests.append((time.monotonic(), dict(self.headers), payload))
                status, headers, body = script(n, payload)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(text: str) -> dict:
    return {"choices": [{"text": text, "index": 0}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


@pytest.fixture
def scripted() -> Iterator[Callable[..., _Scripted]]:
    servers: list[_Scripted] = []

    def make(script: Callable[[int, dict], tuple[int, dict[str, str], object]]) -> _Scripted:
        servers.append(_Scripted(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# ---------------------------------------------------------------------------- config / unit
def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        APIConfig(base_url="localhost:8000")
    assert err.value.field == "base_url"
    with pytest.raises(ConfigError) as err:
        APIConfig(concurrency=0)
    assert err.value.field == "concurrency"
    with pytest.raises(ConfigError) as err:
        APIConfig.parse({"concurency": 2})
    assert "did you mean 'concurrency'" in err.value.one_line()


def test_api_key_sent_as_bearer_but_never_shown(scripted, monkeypatch, caplog) -> None:
    server = scripted(lambda n, p: (200, {}, _completion("ok")))
    monkeypatch.setenv("ADAPTLAB_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    lm = APILM(base_url=server.base_url, model="m", api_key_env="ADAPTLAB_TEST_KEY", **FAST)
    assert isinstance(lm, LM)
    assert lm.generate(["hi"], max_new_tokens=2) == ["ok"]
    assert server.requests[0][1].get("Authorization") == f"Bearer {SECRET}"
    shown = " ".join([repr(lm), str(lm.config), repr(lm.config), json.dumps(lm.config.to_dict()),
                      caplog.text])
    assert SECRET not in shown
    assert "ADAPTLAB_TEST_KEY" in repr(lm)  # the variable's name is fine to show

    monkeypatch.delenv("ADAPTLAB_TEST_KEY")
    lm.generate(["hi"], max_new_tokens=2)
    assert "Authorization" not in server.requests[-1][1]


def test_non_retryable_4xx_fails_at_once_with_server_message(scripted, monkeypatch) -> None:
    server = scripted(lambda n, p: (401, {}, {"error": {"message": "invalid api key"}}))
    monkeypatch.setenv("ADAPTLAB_TEST_KEY", SECRET)
    lm = APILM(base_url=server.base_url, api_key_env="ADAPTLAB_TEST_KEY", **FAST)
    with pytest.raises(BackendError) as err:
        lm.generate(["a", "b"], max_new_tokens=2)
    assert len(server.requests) <= 2  # one per prompt at most, no retries
    assert "HTTP 401" in str(err.value) and "invalid api key" in str(err.value)
    assert SECRET not in str(err.value)


def test_retries_429_with_retry_after_then_500_then_succeeds(scripted) -> None:
    def script(n: int, payload: dict):
        if n == 0:
            return 429, {"Retry-After": "0.3"}, {"error": {"message": "slow down"}}
        if n == 1:
            return 500, {}, {"error": {"message": "boom"}}
        if n == 2:
            return 200, {}, b"{not json"
        return 200, {}, _completion("fine")

    server = scripted(script)
    lm = APILM(base_url=server.base_url, max_retries=3, **FAST)
    assert lm.generate(["x"], max_new_tokens=3) == ["fine"]
    times = [t for t, _, _ in server.requests]
    assert len(times) == 4
    assert times[1] - times[0] >= 0.28  # Retry-After honoured (it exceeds the backoff here)
    assert lm.usage.requests == 1 and lm.usage.generated_tokens == 2


def test_retry_after_is_capped_and_retries_are_bounded(scripted) -> None:
    server = scripted(lambda n, p: (503, {"Retry-After": "3600"}, {"error": "overloaded"}))
    lm = APILM(base_url=server.base_url, max_retries=2, backoff_base_s=0.01, max_backoff_s=0.2)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        lm.generate(["x"])
    assert time.monotonic() - start < 3.0
    assert len(server.requests) == 3
    assert "HTTP 503" in str(err.value) and "2 retries" in str(err.value)


def test_connection_refused_is_a_clear_error_in_bounded_time() -> None:
    lm = APILM(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=2, **FAST)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        lm.generate(["x", "y", "z"])
    assert time.monotonic() - start < 5.0
    assert "connection refused" in str(err.value)
    assert err.value.partial == [None, None, None]


def test_timeout_is_retried_then_reported(scripted) -> None:
    def script(n: int, payload: dict):
        time.sleep(0.6)
        return 200, {}, _completion("late")

    server = scripted(script)
    lm = APILM(base_url=server.base_url, max_retries=1, timeout_s=0.2, backoff_base_s=0.01)
    with pytest.raises(BackendError) as err:
        lm.generate(["x"])
    assert "timed out" in str(err.value)
    assert len(server.requests) == 2


def test_parsed_fallback_without_echo_support(scripted) -> None:
    # a server whose completions ignore echo/logprobs: scoring must parse the generation
    server = scripted(lambda n, p: (200, {}, _completion("  Positive, clearly")))
    lm = APILM(base_url=server.base_url, **FAST)
    [scores] = lm.loglikelihood([LoglikelihoodRequest("Review: great. Sentiment:",
                                                      (" negative", " positive", " pos"))])
    assert scores.logprobs == (-math.inf, 0.0, -math.inf)  # longest matching continuation wins
    assert lm.usage.extra["parsed_fallback"] == 1
    assert lm.usage.extra.get("token_count_estimated", 0) >= 1  # no tokenizer endpoint here


# ------------------------------------------------------------------ real llama.cpp server
# llama-cpp-python aligns echoed logprobs only when the prompt starts with the BOS token.
BOS = "<|im_start|>"


@pytest.fixture(scope="module")
def lm(llama_server: str) -> Iterator[APILM]:
    with APILM(base_url=llama_server, model="smollm2", bos_text=BOS, timeout_s=120.0) as client:
        yield client


@pytest.mark.server
def test_generate_obeys_max_tokens_and_stop(lm: APILM) -> None:
    prompt = "Count: 1, 2, 3, 4,"
    before = lm.usage.generated_tokens
    [free] = lm.generate([prompt], max_new_tokens=8)
    assert free.strip()
    assert 1 <= lm.usage.generated_tokens - before <= 8
    assert lm.count_tokens(free) <= 9  # re-tokenising may split one token differently at an edge
    [cut] = lm.generate([prompt], max_new_tokens=8, stop=[","])
    assert "," not in cut and cut.strip()
    assert free.startswith(cut)  # greedy: the same text, cut before the stop string


@pytest.mark.server
def test_chat_mode(llama_server: str) -> None:
    with APILM(base_url=llama_server, mode="chat", timeout_s=120.0) as chat:
        [answer] = chat.generate(["What is the capital of France? Answer in one word."],
                                 max_new_tokens=8)
    assert "paris" in answer.lower()
    assert chat.usage.requests == 1 and chat.usage.prompt_tokens > 10  # the chat template applied


@pytest.mark.server
def test_loglikelihood_ranks_the_likely_continuation(lm: APILM) -> None:
    reqs = [LoglikelihoodRequest("The capital of France is", (" Paris", " banana")),
            LoglikelihoodRequest("One, two, three, four,", (" five", " purple"))]
    before = lm.usage.requests
    results = lm.loglikelihood(reqs)
    for r in results:
        assert all(math.isfinite(x) and x < 0 for x in r.logprobs)
        assert r.logprobs[0] > r.logprobs[1] + 2.0
        assert all(n >= 1 for n in r.token_counts)
        assert r.prompt_tokens >= 4
    # one next-token request per query lists the likely answer; the unlikely one (not in its top 20) is echoed
    assert lm.usage.requests - before == 4 and lm.usage.extra["next_token_scored"] >= 2
    assert "parsed_fallback" not in lm.usage.extra
    assert results[0].token_counts[0] == lm.count_tokens(" Paris")  # the server's tokenizer


@pytest.mark.server
def test_next_token_scores_equal_echoed_scores(llama_server: str, monkeypatch) -> None:
    """The server's listed next-token log-probabilities are the echoed ones: the fast path changes cost only."""
    reqs = [LoglikelihoodRequest("The capital of France is", (" Paris", " France")),
            LoglikelihoodRequest("Great movie!\nQuestion: Is this sentence positive or negative?\nAnswer:",
                                 (" positive", " negative"))]
    with APILM(base_url=llama_server, model="smollm2", bos_text=BOS, timeout_s=120.0, top_logprobs=1000) as lm:
        fast = lm.loglikelihood(reqs)
        assert lm.usage.extra["next_token_scored"] == 4  # every label listed among the top 1,000: no echo
        assert lm.usage.requests == 2
        from adaptlab.lm import api

        monkeypatch.setattr(api, "next_token_scores", lambda lp, conts: [None] * len(conts))  # none listed: echo
        echoed = lm.loglikelihood(reqs)
        assert lm.usage.requests == 2 + 2 + 4  # the next-token requests again, then one echo per label
    for f, e in zip(fast, echoed):
        # equal up to llama.cpp's numerics (batch shape and cached prefix change its quantised kernels' sums)
        assert f.logprobs == pytest.approx(e.logprobs, abs=0.25)
        assert (f.logprobs[0] > f.logprobs[1]) == (e.logprobs[0] > e.logprobs[1])
        assert f.token_counts == e.token_counts == (1, 1)


@pytest.mark.server
@pytest.mark.integration
def test_logprobs_agree_with_hf_float32(lm: APILM, default_loaded) -> None:
    torch = pytest.importorskip("torch")
    tok, model = default_loaded.tokenizer, default_loaded.model
    bos_id = tok.convert_tokens_to_ids(BOS)
    reqs = [LoglikelihoodRequest("The capital of France is", (" Paris", " the city of Lyon")),
            LoglikelihoodRequest("Review: I loved it.\nSentiment:", (" positive", " negative"))]
    api = lm.loglikelihood(reqs)
    for req, got in zip(reqs, api):
        hf = []
        for cont in req.continuations:  # HF scores the same text, BOS first like the server
            enc = tok(req.context + cont, return_offsets_mapping=True, add_special_tokens=False)
            ids = [bos_id] + enc["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            picked = [lp[i, ids[i + 1]].item() for i, (_, end) in enumerate(enc["offset_mapping"])
                      if end > len(req.context)]
            hf.append((sum(picked), len(picked)))
        for (h, n), x, m in zip(hf, got.logprobs, got.token_counts):
            assert n == m
            # measured: <= 0.1 nats/token (Q4_1 weights run quantised in llama.cpp)
            assert abs(x - h) <= 0.3 * n, (req, x, h)
        if abs(hf[0][0] - hf[1][0]) > 1.0:
            assert (hf[0][0] > hf[1][0]) == (got.logprobs[0] > got.logprobs[1])


@pytest.mark.server
def test_concurrency_gives_the_same_results_as_sequential(llama_server: str) -> None:
    reqs = [LoglikelihoodRequest(f"Is {i} even? Answer:", (" yes",)) for i in range(3)]
    prompts = [f"Say the number {i}:" for i in range(3)]
    with APILM(base_url=llama_server, bos_text=BOS, concurrency=1, timeout_s=120.0) as seq, \
            APILM(base_url=llama_server, bos_text=BOS, concurrency=3, timeout_s=120.0) as par:
        a = seq.loglikelihood(reqs)
        seen: list[int] = []
        b = par.loglikelihood(reqs, on_result=lambda i, r: seen.append(i))
        ga = seq.generate(prompts, max_new_tokens=4)
        gb = par.generate(prompts, max_new_tokens=4)
    assert sorted(seen) == list(range(3))
    for x, y in zip(a, b):
        assert x.token_counts == y.token_counts
        assert x.logprobs == pytest.approx(y.logprobs, abs=0.02)  # prefix-cache batching may differ
    assert ga == gb
    assert par.usage.requests == seq.usage.requests


@pytest.mark.server
def test_shifted_echo_logprobs_are_detected(llama_server: str) -> None:
    """Without the BOS prefix llama-cpp-python's echo logprobs are off by one token: never use them."""
    req = LoglikelihoodRequest("Q: What is the capital of France?\nA: The capital of France is",
                               (" banana", " Paris"))
    with APILM(base_url=llama_server, logprobs="on", timeout_s=120.0) as strict:
        with pytest.raises(BackendError) as err:
            strict.loglikelihood([req])
    assert "shifted" in str(err.value) and "bos_text" in str(err.value)
    with APILM(base_url=llama_server, logprobs="auto", timeout_s=120.0) as auto:
        [r] = auto.loglikelihood([req])
    assert r.logprobs == (-math.inf, 0.0)  # parsed from the greedy answer " Paris"
    assert auto.usage.extra["parsed_fallback"] == 1


@pytest.mark.server
def test_auto_falls_back_on_a_server_without_logprobs(llama_server_factory) -> None:
    server = llama_server_factory(logits_all=False)
    with APILM(base_url=server.base_url, bos_text=BOS, timeout_s=120.0) as client:
        [r] = client.loglikelihood([LoglikelihoodRequest(
            "Q: What is the capital of France?\nA: The capital of France is", (" banana", " Paris"))])
    assert client.usage.extra.get("parsed_fallback") == 1
    assert r.logprobs == (-math.inf, 0.0)
    assert r.token_counts == (1, 1)  # from the server's tokenizer


@pytest.mark.server
def test_server_stopped_mid_run_keeps_partial_results(llama_server_factory) -> None:
    server = llama_server_factory(logits_all=True)
    reqs = [LoglikelihoodRequest(f"Item {i}: the sky is", (" blue",)) for i in range(10)]
    got: dict[int, object] = {}

    def on_result(i: int, r: object) -> None:
        got[i] = r
        if len(got) == 2:
            server.stop()

    lm = APILM(base_url=server.base_url, bos_text=BOS, concurrency=1, max_retries=2,
               backoff_base_s=0.05, timeout_s=60.0)
    start = time.monotonic()
    with pytest.raises(BackendError) as err:
        lm.loglikelihood(reqs, on_result=on_result)
    assert time.monotonic() - start < 90
    msg = str(err.value)
    assert server.base_url in msg and "stopped after" in msg and "unreachable" in msg
    partial = err.value.partial
    assert len(partial) == len(reqs)
    assert partial[0] is not None and partial[1] is not None and partial[-1] is None
    assert {i for i, r in enumerate(partial) if r is not None} == set(got)
    for i, r in got.items():
        assert partial[i] == r and math.isfinite(r.logprobs[0])
