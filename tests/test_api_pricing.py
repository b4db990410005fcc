"""Pricing API models: the pinned price table, `ModelSpec.price`, and `APILM` counting the tokens a server's
responses report (``usage.prompt_tokens`` / ``completion_tokens``), what an API bills."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adaptlab.errors import ConfigError
from adaptlab.lm.api import APILM
from adaptlab.lm.base import LoglikelihoodRequest, Usage
from adaptlab.models.prices import PRICES_SOURCE, TokenPrice, context_window, known_priced_models, price_for
from adaptlab.models.spec import ModelSpec

try:
    from llama_server import llama_server  # noqa: F401
    from test_api_faults import FAST, GENERATED, TOKEN, FaultServer, server  # noqa: F401 (the fixture)
except ImportError:  # tests/ imported as a package
    from tests.llama_server import llama_server  # noqa: F401
    from tests.test_api_faults import FAST, GENERATED, TOKEN, FaultServer, server  # noqa: F401 (the fixture)




def reported_by(srv: FaultServer) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, answers) the fake server reported: every completions request it
    answered reports its prompt's tokens and one completion token (``test_api_faults.completion``)."""
    prompts = [p for path, p, _, _ in srv.requests if path.endswith("/completions")]
    return sum(len(TOKEN.findall(p)) for p in prompts), len(prompts), len(prompts)


# ------------------------------------------------------------------ reported usage


def test_generation_counts_the_tokens_the_server_reported(server) -> None:
    srv = server("ok")
    lm = APILM(base_url=srv.base_url, model="fake", timeout_s=5.0, **FAST)
    prompts = ["Say yes:", "A much longer prompt with quite a few more words in it:", "x"]
    assert lm.generate(prompts, max_new_tokens=3) == [GENERATED] * 3
    prompt_tokens, completion_tokens, answers = reported_by(srv)
    assert answers == 3 and prompt_tokens == 2 + 12 + 1  # the fake tokenizer: one token per word
    assert (lm.usage.reported_input_tokens, lm.usage.reported_output_tokens) == (prompt_tokens, completion_tokens)
    assert lm.usage.unreported_requests == 0
    # the existing counters keep their meaning: the same reported counts, per scored/generated request
    assert lm.usage.requests == 3 and lm.usage.prompt_tokens == prompt_tokens
    assert lm.usage.generated_tokens == completion_tokens


def test_loglikelihood_counts_every_answered_request_including_the_probe(server) -> None:
    srv = server("ok")
    lm = APILM(base_url=srv.base_url, model="fake", timeout_s=5.0, **FAST)
    reqs = [LoglikelihoodRequest("Is it good? Answer:", (" yes", " no")),
            LoglikelihoodRequest("Two plus two is", (" four", " five or six"))]
    results = lm.loglikelihood(reqs)
    assert all(math.isfinite(x) for r in results for x in r.logprobs)  # echo scoring, not parsing
    prompt_tokens, completion_tokens, answers = reported_by(srv)
    assert answers == 2 + 4  # the one-time probe (2 requests), then one request per continuation
    assert lm.usage.reported_input_tokens == prompt_tokens > 0
    assert lm.usage.reported_output_tokens == completion_tokens == answers
    assert lm.usage.unreported_requests == 0
    assert lm.usage.requests == 4 and lm.usage.reported_input_tokens > lm.usage.prompt_tokens  # + the probe's


def test_failed_attempts_count_nothing(server) -> None:
    srv = server("flaky", 2)  # every prompt fails twice with HTTP 500, then succeeds
    lm = APILM(base_url=srv.base_url, max_retries=3, concurrency=2, timeout_s=5.0, **FAST)
    prompts = ["one two three", "four five"]
    assert lm.generate(prompts, max_new_tokens=1) == [GENERATED] * 2
    assert len(srv.requests) == 6
    assert lm.usage.reported_input_tokens == 3 + 2  # each prompt once, as answered
    assert lm.usage.reported_output_tokens == 2 and lm.usage.unreported_requests == 0


def test_tokenizer_answers_are_not_billed_requests() -> None:
    """A tokenizer endpoint answers without ``usage``: that is not an unreported (billed) request."""

    class Tokenizer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            data = json.dumps({"tokens": [1, 2, 3]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Tokenizer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        lm = APILM(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", timeout_s=5.0, **FAST)
        assert lm.count_tokens("some text here") == 3
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (lm.usage.reported_input_tokens, lm.usage.unreported_requests, lm.usage.requests) == (0, 0, 0)


@pytest.mark.parametrize("usage, counted, unreported", [
    (None, (0, 0), 1),                                             # no usage at all
    ({"prompt_tokens": 9}, (9, 0), 1),                             # incomplete: counted, but flagged
    ({"prompt_tokens": "9", "completion_tokens": -1}, (0, 0), 1),  # not counts
    ({"prompt_tokens": 9, "completion_tokens": 2}, (9, 2), 0),
])
def test_a_response_without_usage_is_counted_as_unreported(server, usage: dict | None, counted: tuple[int, int],
                                                           unreported: int) -> None:
    srv = server("body")
    srv.body = {"choices": [{"text": " maybe"}], **({"usage": usage} if usage is not None else {})}
    lm = APILM(base_url=srv.base_url, timeout_s=5.0, **FAST)
    assert lm.generate(["hello"], max_new_tokens=2) == [" maybe"]
    assert (lm.usage.reported_input_tokens, lm.usage.reported_output_tokens) == counted
    assert lm.usage.unreported_requests == unreported and lm.usage.requests == 1


def test_usage_add_sums_the_reported_counters() -> None:
    total = Usage(requests=1, reported_input_tokens=5, reported_output_tokens=1)
    total.add(Usage(requests=2, reported_input_tokens=7, reported_output_tokens=3, unreported_requests=1))
    assert (total.requests, total.reported_input_tokens, total.reported_output_tokens,
            total.unreported_requests) == (3, 12, 4, 1)


# ------------------------------------------------------------------ the price table


def test_price_table_lookups() -> None:
    assert price_for("gpt-4o") == TokenPrice(input_per_mtok=2.5, output_per_mtok=10.0)
    assert price_for("gpt-4o-mini") == TokenPrice(input_per_mtok=0.15, output_per_mtok=0.6)
    assert price_for("openai/gpt-4o") == price_for("gpt-4o")  # a provider prefix
    assert price_for("OpenAI/GPT-4o") == price_for("gpt-4o")
    assert price_for("mistral-small-latest") == price_for("mistral/mistral-small-latest") is not None
    assert price_for("no-such-model") is None and price_for("someorg/no-such-model") is None
    assert price_for("gpt-4o-2024-05-13") is None  # only the listed names, no guessing from prefixes
    assert context_window("gpt-4.1") == 1_047_576 and context_window("no-such-model") is None


def test_price_table_is_pinned_and_sane() -> None:
    names = known_priced_models()
    assert len(names) >= 15 and names == sorted(names)
    assert "19a1f629eb6fafde70968ef4815463eb08143aac" in PRICES_SOURCE and "LiteLLM" in PRICES_SOURCE
    for name in names:
        price = price_for(name)
        assert price is not None and 0 < price.input_per_mtok <= price.output_per_mtok < 100, name
        assert (context_window(name) or 0) >= 32_000, name


def test_token_price_validates_and_prices_tokens() -> None:
    price = TokenPrice(input_per_mtok=2.0, output_per_mtok=8.0)
    assert price.cost(1_000_000, 0) == pytest.approx(2.0)
    assert price.cost(1500, 500) == pytest.approx(0.003 + 0.004)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ConfigError):
            TokenPrice(input_per_mtok=bad, output_per_mtok=1.0)
    with pytest.raises(ConfigError):
        TokenPrice(input_per_mtok=1.0)  # both prices are needed


# ------------------------------------------------------------------ ModelSpec.price


def test_model_spec_price_defaults_to_the_table_and_can_be_overridden() -> None:
    url = "http://127.0.0.1:9/v1"
    assert ModelSpec(name="gpt-4o", backend="api", base_url=url).token_price() == price_for("gpt-4o")
    assert ModelSpec(name="smollm2-135m-instruct").token_price() is None
    own = ModelSpec.parse({"name": "gpt-4o", "backend": "api", "base_url": url,
                           "price": {"input_per_mtok": 1.25, "output_per_mtok": 5}})
    assert own.token_price() == TokenPrice(input_per_mtok=1.25, output_per_mtok=5.0)
    assert ModelSpec(name="my-local-server-model", backend="api", base_url=url,
                     price=TokenPrice(input_per_mtok=0, output_per_mtok=0)).token_price().cost(10**6, 10**6) == 0
    with pytest.raises(ConfigError):
        ModelSpec.parse({"name": "gpt-4o", "price": {"input_per_mtok": -1, "output_per_mtok": 1}})


def test_model_spec_identity_ignores_the_price() -> None:
    url = "http://127.0.0.1:9/v1"
    plain = ModelSpec(name="gpt-4o", backend="api", base_url=url)
    priced = ModelSpec(name="gpt-4o", backend="api", base_url=url,
                       price=TokenPrice(input_per_mtok=99, output_per_mtok=99))
    assert priced.identity() == plain.identity() == {"backend": {"name": "api", "base_url": url}}
    assert ModelSpec(price=TokenPrice(input_per_mtok=1, output_per_mtok=1)).identity() == {}


# ------------------------------------------------------------------ real llama.cpp server
BOS = "<|im_start|>"  # llama-cpp-python aligns echoed logprobs only after the BOS token


@pytest.mark.server
def test_llama_server_reported_usage_is_counted(llama_server: str) -> None:
    with APILM(base_url=llama_server, model="smollm2", bos_text=BOS, timeout_s=120.0) as gen:
        [text] = gen.generate(["Count: 1, 2, 3,"], max_new_tokens=4)
    assert text.strip()
    u = gen.usage
    assert u.unreported_requests == 0 and u.requests == 1
    assert u.reported_input_tokens == u.prompt_tokens >= 5  # llama.cpp reports usage on every answer
    assert 1 <= u.reported_output_tokens == u.generated_tokens <= 4
    with APILM(base_url=llama_server, model="smollm2", bos_text=BOS, timeout_s=120.0) as scorer:
        scorer.loglikelihood([LoglikelihoodRequest("The capital of France is", (" Paris", " Rome"))])
    u = scorer.usage
    assert u.unreported_requests == 0 and u.requests == 2
    assert u.reported_input_tokens > u.prompt_tokens >= 2 * 5  # + the probe's two requests
    assert u.reported_output_tokens >= 2
