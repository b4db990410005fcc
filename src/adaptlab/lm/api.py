"""`APILM`: the `LM` interface over an OpenAI-compatible HTTP server (llama.cpp, vLLM, OpenAI, ...).

Scoring uses ``POST /v1/completions`` with ``echo`` + ``logprobs`` (the legacy completions format:
``tokens``, ``token_logprobs``, ``text_offset``) where the server offers it; where it does not, a
request is answered by generating a short text and *parsing* it (see `APILM.loglikelihood`).
Generation uses ``/v1/completions`` or ``/v1/chat/completions``. Requests run concurrently on a
thread pool, each with a timeout and bounded retries (exponential backoff with jitter, honouring a
capped ``Retry-After``) on connection errors, timeouts, 429 and 5xx. The API key is read from an
environment variable at call time and is never stored, logged or shown in a repr. The token counts each
answer's ``usage`` reports, what an API bills, are summed in ``usage.reported_input_tokens`` and
``usage.reported_output_tokens``; answers without them are counted in ``usage.unreported_requests``.
``token_price`` (with ``price_source``) is what the API charges for them, when known (`build_lm` sets it from
the model's spec).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from adaptlab.errors import AdaptlabError
from adaptlab.lm.api_config import (MAX_SERVER_STOPS, RETRY_STATUSES, APIConfig, BackendError, usage_count,
                                    cut_at_stop, describe_error, normalise_text, retry_after_seconds, server_message)
from adaptlab.lm.api_next_token import TOP_LOGPROBS, next_token_payload, next_token_scores
from adaptlab.lm.base import ContinuationScores, LoglikelihoodRequest, Usage, no_kept_prefix

if TYPE_CHECKING:
    from adaptlab.models.prices import TokenPrice

log = logging.getLogger(__name__)
NO_500 = RETRY_STATUSES - {500}  # llama-cpp-python answers 500 when its logprobs are off: not worth a retry

T = TypeVar("T")


def _is_count(value: Any) -> bool:
    """Whether a ``usage`` field holds a token count (a non-negative int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class APILM:
    """`LM` backed by an OpenAI-compatible server. ``APILM(config)`` or ``APILM(base_url=..., ...)``."""

    def __init__(self, config: APIConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = APIConfig(**overrides)
        elif overrides:
            config = APIConfig(**{**config.model_dump(), **overrides})
        self.config = config
        self.name = f"api:{config.model}"
        self.usage = Usage()
        self.n_params: int | None = None  # a server does not tell
        self.max_length: int | None = config.context_length
        self.token_price: TokenPrice | None = None
        """$ per 1M input/output tokens the API charges (None: unknown, or a free local server)."""
        self.price_source: str | None = None
        """Where ``token_price`` comes from (the model spec's ``price``, or the pinned table)."""
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._echo_ok: bool | None = False if config.logprobs == "off" else None
        self._next_ok: bool | None = None  # next-token scoring accepted by the server (None: not yet asked)
        self._tokenize_route: str | None = None  # "extras", "native", "none" once probed
        self._client = httpx.Client(
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.concurrency,
                                max_keepalive_connections=config.concurrency),
        )

    def __repr__(self) -> str:
        c = self.config
        return (f"APILM(base_url={c.base_url!r}, model={c.model!r}, mode={c.mode!r}, "
                f"concurrency={c.concurrency}, api_key_env={c.api_key_env!r})")

    keep_prefix = staticmethod(no_kept_prefix)
    """Prompt caching is the server's own (llama.cpp ``cache_prompt``); the client keeps nothing."""

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> "APILM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP
    @property
    def _root_url(self) -> str:
        """Server root without the version path (for ``/extras/tokenize``, ``/tokenize``)."""
        return re.sub(r"/v\d+$", "", self.config.base_url)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redact(self, text: str) -> str:
        """``text`` with the API key (should a server echo it) masked."""
        key = os.environ.get(self.config.api_key_env, "")
        return text.replace(key, "***") if key else text

    def _post(self, url: str, payload: dict[str, Any], *, retry_statuses: frozenset[int] = RETRY_STATUSES,
              billed: bool = True) -> dict[str, Any]:
        """POST JSON with bounded retries; the parsed JSON object, or BackendError. The ``usage`` of a ``billed``
        request's successful answer is counted (`_report`); failed attempts count nothing."""
        cfg = self.config
        attempts = cfg.max_retries + 1
        last = "no attempt made"
        status: int | None = None
        transport = False
        for attempt in range(attempts):
            wait_s: float | None = None
            transport = False
            try:
                start = time.perf_counter()
                response = self._client.post(url, json=payload, headers=self._headers())
                status = response.status_code
                if response.status_code == 200:
                    try:
                        body = response.json()
                        if not isinstance(body, dict):
                            raise ValueError("not a JSON object")
                    except ValueError as exc:
                        last = f"malformed JSON in response ({exc})"
                    else:
                        self._bump("request_seconds", time.perf_counter() - start)
                        if billed:
                            self._report(body)
                        return body
                elif response.status_code in retry_statuses:
                    last = f"HTTP {status}: {self._redact(server_message(response))}"
                    wait_s = retry_after_seconds(response)
                else:
                    raise BackendError(
                        f"API server {cfg.base_url} rejected {url.rsplit('/', 1)[-1]} request "
                        f"with HTTP {status}: {self._redact(server_message(response))}", status=status)
            except httpx.TransportError as exc:
                last, status, transport = describe_error(exc), None, True
            if attempt + 1 < attempts:
                backoff = cfg.backoff_base_s * 2 ** attempt * (0.5 + 0.5 * self._rng.random())
                delay = min(cfg.max_backoff_s, wait_s if wait_s is not None else backoff)
                log.debug("attempt %d/%d on %s failed (%s); retrying in %.2fs",
                          attempt + 1, attempts, url, last, delay)
                time.sleep(delay)
        retries = "retry" if cfg.max_retries == 1 else "retries"
        verb = "unreachable" if transport else "failed"
        raise BackendError(f"API server {cfg.base_url} {verb} after {cfg.max_retries} {retries}: {last}",
                           status=status, transport=transport,
                           hint="is the server running and reachable?" if transport else None)

    def _report(self, body: dict[str, Any]) -> None:
        """Add a response's reported ``usage`` to ``usage.reported_*`` (probes included: a server bills them); a
        response without both counts is one more ``usage.unreported_requests``."""
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        with self._lock:
            self.usage.reported_input_tokens += usage_count(prompt)
            self.usage.reported_output_tokens += usage_count(completion)
            if not (_is_count(prompt) and _is_count(completion)):
                self.usage.unreported_requests += 1

    def _account(self, body: dict[str, Any]) -> tuple[int, int]:
        """Count one scoring or generation request (``usage.requests``) and its reported tokens (0 when missing)
        in ``prompt_tokens``/``computed_tokens``/``generated_tokens``; (prompt, completion) tokens."""
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt, completion = usage_count(usage.get("prompt_tokens")), usage_count(usage.get("completion_tokens"))
        with self._lock:
            self.usage.requests += 1
            self.usage.prompt_tokens += prompt
            self.usage.computed_tokens += prompt
            self.usage.generated_tokens += completion
        return prompt, completion

    def _bump(self, key: str, amount: float = 1.0) -> None:
        with self._lock:
            self.usage.extra[key] = self.usage.extra.get(key, 0.0) + amount

    # ------------------------------------------------------------ scheduling
    def _run_all(self, items: Sequence[Any], work: Callable[[Any], T], *, what: str,
                 on_result: Callable[[int, T], None] | None, progress: bool) -> list[T]:
        """Run ``work`` on every item with bounded concurrency, results in order.

        ``on_result(i, result)`` is called in the caller's thread as each result arrives. On the
        first failure no new work starts; in-flight work finishes, and BackendError is raised with
        ``partial`` aligned to ``items`` (``None`` where unfinished).
        """
        if not items:
            return []
        started = time.perf_counter()
        try:
            return self._drain(items, work, what=what, on_result=on_result, progress=progress)
        finally:
            with self._lock:
                self.usage.seconds += time.perf_counter() - started

    def _drain(self, items: Sequence[Any], work: Callable[[Any], T], *, what: str,
               on_result: Callable[[int, T], None] | None, progress: bool) -> list[T]:
        results: list[Any] = [None] * len(items)
        done_count, step = 0, max(1, len(items) // 10)
        failure: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="apilm")
        try:
            futures: dict[Future[T], int] = {pool.submit(work, item): i for i, item in enumerate(items)}
            pending = set(futures)
            while pending and failure is None:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=futures.__getitem__):
                    if fut.exception() is not None:
                        failure = failure or fut.exception()
                        continue
                    i = futures[fut]
                    results[i] = fut.result()
                    done_count += 1
                    if on_result is not None:
                        on_result(i, results[i])
                    if progress and (done_count % step == 0 or done_count == len(items)):
                        log.info("%s: %d/%d done", what, done_count, len(items))
            for fut in pending:  # after a failure: stop queued work, keep what is in flight
                fut.cancel()
            for fut in sorted(pending, key=futures.__getitem__):
                if not fut.cancelled() and fut.exception() is None:
                    i = futures[fut]
                    results[i] = fut.result()
                    done_count += 1
                    if on_result is not None:
                        on_result(i, results[i])
        finally:  # also on Ctrl-C or an exception from on_result: drop queued requests
            pool.shutdown(wait=True, cancel_futures=True)
        if failure is not None:
            message = failure.message if isinstance(failure, AdaptlabError) else describe_error(failure)  # type: ignore[arg-type]
            raise BackendError(f"{what} stopped after {done_count}/{len(items)} results: {message}",
                               partial=results, status=getattr(failure, "status", None),
                               transport=getattr(failure, "transport", False),
                               hint=getattr(failure, "hint", None)) from failure
        return results

    # ----------------------------------------------------------- generation
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 progress: bool = False,
                 on_result: Callable[[int, str], None] | None = None) -> list[str]:
        """Greedy (temperature 0) completion of each prompt, cut before the first stop string.

        Up to four stop strings are sent to the server; all are applied client-side as well.
        ``on_result(index, text)`` is called as each text arrives (to persist partial work).
        """
        stop = [s for s in stop if s]
        return self._run_all(list(prompts), lambda p: self._generate_one(p, max_new_tokens, stop),
                             what="generate", on_result=on_result, progress=progress)

    def _generate_one(self, prompt: str, max_new_tokens: int, stop: Sequence[str]) -> str:
        cfg = self.config
        payload: dict[str, Any] = {"model": cfg.model, "max_tokens": max_new_tokens, "temperature": 0.0}
        if stop:
            payload["stop"] = list(stop[:MAX_SERVER_STOPS])
        if cfg.mode == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
            body = self._post(f"{cfg.base_url}/chat/completions", payload)
            message = self._choice(body).get("message")
            text = self._text(message.get("content") if isinstance(message, dict) else None, "message.content")
        else:
            payload["prompt"] = prompt
            body = self._post(f"{cfg.base_url}/completions", payload)
            text = self._text(self._choice(body).get("text"), "text")
        self._account(body)
        return cut_at_stop(text, stop)

    def _text(self, value: Any, what: str) -> str:
        """A completion's text field: a string (missing: empty), anything else is a BackendError."""
        if value is None:
            return ""
        if not isinstance(value, str):
            raise BackendError(f"API server {self.config.base_url} returned a non-text {what}: {str(value)[:80]}")
        return value

    def _logprobs(self, body: dict[str, Any]) -> dict[str, Any]:
        lp = self._choice(body).get("logprobs")
        if lp is not None and not isinstance(lp, dict):
            raise BackendError(f"API server {self.config.base_url} returned malformed logprobs: {str(lp)[:80]}")
        return lp or {}

    def _choice(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError(f"API server {self.config.base_url} returned no choices: {str(body)[:200]}")
        return choices[0]

    # -------------------------------------------------------------- scoring
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], *, progress: bool = False,
                      on_result: Callable[[int, ContinuationScores], None] | None = None,
                      ) -> list[ContinuationScores]:
        """log p(continuation | context) for each continuation of each request.

        A one-time probe checks that the server echoes prompts with correctly aligned per-token
        logprobs. If so, each continuation is scored exactly: ``bos_text + context + continuation``
        is echoed and the logprobs of the tokens overlapping the continuation's characters (by
        ``text_offset``) are summed. Otherwise ("on" raises BackendError; "off" skips the probe)
        the backend
        *parses* a greedy generation: the longest continuation that the generated text starts
        with (whitespace- and case-normalised) gets 0.0 and every other continuation ``-inf``
        (all ``-inf`` when none matches). Such results are counted in
        ``usage.extra["parsed_fallback"]`` (and ``["parsed_no_match"]``).
        ``on_result(index, scores)`` is called as each request's result arrives.
        """
        requests = list(requests)
        if requests and self._echo_ok is None:
            self._echo_ok = self._probe_echo()
        work = self._score_echo if self._echo_ok else self._score_parsed
        return self._run_all(requests, work, what="loglikelihood", on_result=on_result,
                             progress=progress)

    def _echo_body(self, text: str, *, retry_statuses: frozenset[int] = RETRY_STATUSES) -> dict[str, Any]:
        payload = {"model": self.config.model, "prompt": self.config.bos_text + text, "max_tokens": 1,
                   "temperature": 0.0, "echo": True, "logprobs": 1}
        return self._post(f"{self.config.base_url}/completions", payload, retry_statuses=retry_statuses)

    def _probe_echo(self) -> bool:
        """Whether the server echoes prompts with *correctly aligned* per-token logprobs (asked once).

        Generates one greedy token g after a fixed probe text with its logprob, then echoes
        ``text + g``: an aligned server reports the same logprob for g both times. Failure to
        align raises BackendError when ``logprobs="on"``; with "auto" scoring falls back to parsing.
        """
        cfg = self.config
        probe = "The capital of France is"
        reason = ""
        try:
            body = self._post(f"{cfg.base_url}/completions", {
                "model": cfg.model, "prompt": cfg.bos_text + probe, "max_tokens": 1,
                "temperature": 0.0, "logprobs": TOP_LOGPROBS}, retry_statuses=NO_500)
            lp = self._logprobs(body)
            if next_token_scores(lp, []) is None:  # no alternatives listed: no next-token scoring
                self._next_ok = False
            tokens, values = lp.get("tokens"), lp.get("token_logprobs")
            generated = tokens[0] if isinstance(tokens, list) and tokens else ""
            expected = values[0] if isinstance(values, list) and values else None
            if not isinstance(expected, (int, float)) or isinstance(expected, bool) or not isinstance(
                    generated, str) or not generated:
                reason = "no logprobs for generated tokens"
            else:
                got = self._continuation_logprob(probe, generated, self._echo_body(
                    probe + generated, retry_statuses=NO_500))[0]
                if abs(got - float(expected)) > 0.1:
                    reason = (f"echoed logprob of {generated!r} is {got:.3f} but {float(expected):.3f} "
                              "when generated (shifted by one token?)")
        except BackendError as exc:
            if exc.transport:
                raise  # the server cannot be reached at all: no point in falling back
            reason = exc.message
        finally:
            self._bump("probe_requests", 2)
        if not reason:
            return True
        hint = ("set bos_text to the model's BOS token (llama-cpp-python: '<|im_start|>' for SmolLM2)"
                if "shifted" in reason else "start the server with logprobs enabled")
        if cfg.logprobs == "on":
            raise BackendError(f"API server {cfg.base_url} cannot score prompts: {reason}", hint=hint)
        log.warning("API server %s cannot score prompts (%s; %s); loglikelihood falls back to parsing "
                    "generations (0.0 for the generated continuation, -inf for the others)",
                    cfg.base_url, reason, hint)
        return False

    def _continuation_logprob(self, context: str, cont: str, body: dict[str, Any]) -> tuple[float, int, int]:
        """(summed logprob, tokens, context tokens) of ``cont`` in an echoed ``context + cont``.

        Tokens are located by ``text_offset``: a token belongs to the continuation when it covers
        any of its characters. Offsets may start at the BOS text or after it (servers differ).
        """
        lp = self._logprobs(body)
        tokens, offsets, values = lp.get("tokens"), lp.get("text_offset"), lp.get("token_logprobs")
        if not tokens or offsets is None or values is None:
            raise BackendError(f"API server {self.config.base_url} returned no echo logprobs",
                               hint="use logprobs='off' for servers without echo support")
        if not (isinstance(tokens, list) and isinstance(offsets, list) and isinstance(values, list)
                and len(tokens) == len(offsets) == len(values)
                and all(isinstance(t, str) for t in tokens)
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)):
            raise BackendError(f"API server {self.config.base_url} returned malformed echo logprobs "
                               "(tokens, text_offset and token_logprobs must be aligned lists)")
        bos = self.config.bos_text
        ctx_start = offsets[0] + (len(bos) if bos and "".join(tokens).startswith(bos) else 0)
        cont_start, cont_end = ctx_start + len(context), ctx_start + len(context) + len(cont)
        total, n, n_ctx = 0.0, 0, 0
        for tok, off, val in zip(tokens, offsets, values):
            if off >= cont_end:  # the generated token after the echo
                break
            if off + len(tok) <= cont_start:
                n_ctx += 1
                continue
            if val is None:
                raise BackendError(
                    f"API server {self.config.base_url} gave no logprob for the first token; "
                    "an empty context cannot be scored over the API", hint="set bos_text")
            total += float(val)
            n += 1
        if n == 0 and cont:
            raise BackendError(f"could not locate continuation {cont!r} in the echoed tokens")
        return total, n, n_ctx

    def _score_echo(self, request: LoglikelihoodRequest) -> ContinuationScores:
        """Listed one-token continuations from one next-token request (`api_next_token`); the others echoed."""
        known = self._next_token(request)
        logprobs: list[float] = []
        counts: list[int] = []
        prompt_tokens = known[1] if known else 0
        for k, cont in enumerate(request.continuations):
            if known and known[0][k] is not None:
                logprobs.append(known[0][k])
                counts.append(1)
                continue
            body = self._echo_body(request.context + cont)
            self._account(body)
            total, n, n_ctx = self._continuation_logprob(request.context, cont, body)
            prompt_tokens = prompt_tokens or n_ctx
            logprobs.append(total)
            counts.append(n)
        return ContinuationScores(tuple(logprobs), tuple(counts), prompt_tokens)

    def _next_token(self, request: LoglikelihoodRequest) -> tuple[list[float | None], int] | None:
        """(next-token log p per continuation, None where not listed; prompt tokens), or None when the server
        refuses next-token requests (then never asked again)."""
        if self._next_ok is False or not request.continuations:
            return None
        try:
            body = self._post(f"{self.config.base_url}/completions", next_token_payload(
                self.config.model, self.config.bos_text + request.context, self.config.top_logprobs),
                retry_statuses=NO_500)
        except BackendError as exc:
            if exc.transport or exc.status not in (400, 404, 422, 500):
                raise
            self._next_ok = False  # the server refuses the request's fields: echo only from here on
            log.info("API server %s refused next-token scoring (%s)", self.config.base_url, exc.message)
            return None
        scores = next_token_scores(self._logprobs(body), request.continuations)
        prompt_tokens, _ = self._account(body)
        self._next_ok = scores is not None  # no alternatives listed: this server is scored by echo only
        if scores is not None:
            self._bump("next_token_scored", sum(v is not None for v in scores))
        return None if scores is None else (scores, prompt_tokens)

    def _score_parsed(self, request: LoglikelihoodRequest) -> ContinuationScores:
        cfg = self.config
        payload = {"model": cfg.model, "prompt": cfg.bos_text + request.context, "temperature": 0.0,
                   "max_tokens": cfg.fallback_max_tokens}
        body = self._post(f"{cfg.base_url}/completions", payload)
        prompt_tokens, _ = self._account(body)
        generated = normalise_text(self._text(self._choice(body).get("text"), "text"))
        matches = [(len(normalise_text(c)), i) for i, c in enumerate(request.continuations)
                   if normalise_text(c) and generated.startswith(normalise_text(c))]
        best = max(matches)[1] if matches else None
        self._bump("parsed_fallback")
        if best is None:
            self._bump("parsed_no_match")
        logprobs = tuple(0.0 if i == best else -math.inf for i in range(len(request.continuations)))
        counts = tuple(self.count_tokens(c) for c in request.continuations)
        return ContinuationScores(logprobs, counts, prompt_tokens)

    # ----------------------------------------------------------- tokenizer
    def count_tokens(self, text: str) -> int:
        """Tokens via the server's tokenizer (``/extras/tokenize`` or ``/tokenize``).

        Without one, a rough ``ceil(len(text) / 4)`` estimate, counted in
        ``usage.extra["token_count_estimated"]``.
        """
        routes = {
            "extras": (f"{self._root_url}/extras/tokenize", {"input": text}),
            "native": (f"{self._root_url}/tokenize", {"content": text}),
        }
        order = [self._tokenize_route] if self._tokenize_route else ["extras", "native"]
        for route in order:
            if route == "none":
                break
            url, payload = routes[route]
            try:
                body = self._post(url, payload, retry_statuses=RETRY_STATUSES - {500}, billed=False)
            except BackendError as exc:
                if exc.transport or self._tokenize_route:
                    raise
                continue
            tokens = body.get("tokens")
            if isinstance(tokens, list):
                self._tokenize_route = route
                return len(tokens)
        self._tokenize_route = "none"
        self._bump("token_count_estimated")
        return math.ceil(len(text) / 4)
