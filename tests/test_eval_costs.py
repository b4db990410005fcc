"""The evaluator's serving costs: batched throughput, the interval of the single-query median latency, the tokens
an API reported with its price, and a compare cell's own peak memory.

Throughput and latency use scripted fakes whose time is a stated rule (a fixed sleep per forward pass), so the
best batch size is known in advance; API tokens use the scripted OpenAI-compatible server of the API tests, whose
reported usage is counted by hand.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from adaptlab.evaluate import EvalSettings, evaluate, median_interval
from adaptlab.lm.base import ContinuationScores, LoglikelihoodRequest, batch_size_of, batch_size_set, token_price_of
from adaptlab.lm.factory import build_lm
from adaptlab.lm.pool import ModelPool
from adaptlab.models.costs import CELL_RSS, MemoryWindow, cell_peak, module_bytes
from adaptlab.models.prices import PRICES_SOURCE, TokenPrice
from adaptlab.models.spec import ModelSpec
from adaptlab.results import CellRecord, Scenario
from adaptlab.strategies import FitContext, ZeroShotConfig
from fakes import SENTIMENT_KEYWORDS, TEST_ROWS, ScriptedLM, make_examples, sentiment_task
from test_finetune_toy import one_thread_torch, write_toy_task

try:
    from test_api_faults import FaultServer
    from test_api_pricing import reported_by
except ImportError:  # tests/ imported as a package
    from tests.test_api_faults import FaultServer
    from tests.test_api_pricing import reported_by

MB = 1 << 20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak reset needs /proc (Linux)")
one_thread = pytest.fixture(one_thread_torch)
QUIET = EvalSettings(latency_sample=0, throughput_batch_sizes=())
"""No timed measurements beyond the main predict."""


class BatchedLM(ScriptedLM):
    """`ScriptedLM` with a batch size and a time rule: every forward pass (``batch_size`` requests) sleeps
    ``forward_s``, so n queries at batch size b take ceil(n / b) x forward_s. `keep_prefix` is available and
    recorded; each call records (requests, batch size, prefix kept)."""

    def __init__(self, *, batch_size: int = 32, forward_s: float = 0.02) -> None:
        super().__init__(SENTIMENT_KEYWORDS)
        self.batch_size = batch_size
        self.forward_s = forward_s
        self.kept = False
        self.log: list[tuple[int, int, bool]] = []

    @contextmanager
    def keep_prefix(self) -> Iterator[bool]:  # type: ignore[override]
        self.kept = True
        try:
            yield True
        finally:
            self.kept = False

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], *,
                      progress: bool = False) -> list[ContinuationScores]:
        self.log.append((len(requests), self.batch_size, self.kept))
        time.sleep(self.forward_s * math.ceil(len(requests) / self.batch_size))
        return super().loglikelihood(requests, progress=progress)


def _task_and_test(n: int):
    rows = (TEST_ROWS * (n // len(TEST_ROWS) + 1))[:n]
    return sentiment_task(), make_examples(rows, "test")


# ------------------------------------------------------------------ the median's interval


def test_median_interval_is_the_binomial_order_statistic_interval() -> None:
    xs = [float(i) for i in range(1, 21)]  # x_(i) = i
    assert median_interval(xs[::-1], 0.95) == (6.0, 15.0)  # k = 20: P(B <= 5) = 0.0207 <= 0.025 < P(B <= 6)
    assert median_interval(xs[:10], 0.95) == (2.0, 9.0)     # k = 10: P(B <= 1) = 0.0107 <= 0.025 < 0.0547
    assert median_interval(xs[:6], 0.95) == (1.0, 6.0)      # k = 6: min and max cover 1 - 2/64 = 96.9%
    assert median_interval(xs[:5], 0.95) == (None, None)    # k = 5: even min..max covers only 93.75%
    assert median_interval([], 0.95) == (None, None)
    for k in range(6, 60):  # the coverage is reached, and one step narrower would miss it
        low, _ = median_interval([float(i) for i in range(1, k + 1)], 0.95)
        j = int(low)
        miss = sum(math.comb(k, i) for i in range(j)) / 2 ** k
        assert 1 - 2 * miss >= 0.95 > 1 - 2 * (miss + math.comb(k, j) / 2 ** k), k


def test_latency_intervals_bracket_the_medians() -> None:
    task, test = _task_and_test(24)
    lm = BatchedLM(forward_s=0.002)
    adapted = ZeroShotConfig().fit(task, [], [], FitContext.of(lm))
    q = evaluate(adapted, task, test, settings=EvalSettings(latency_sample=20, throughput_batch_sizes=())
                 ).cost["query"]
    for name in ("latency_p50", "latency_p50_warm"):
        assert 0 < q[f"{name}_low_s"] <= q[f"{name}_s"] <= q[f"{name}_high_s"], name
    assert q["throughput"] == [] and q["throughput_qps"] is None
    cold = evaluate(ZeroShotConfig().fit(task, [], [], FitContext.of(ScriptedLM(SENTIMENT_KEYWORDS))), task, test,
                    settings=EvalSettings(latency_sample=5, throughput_batch_sizes=())).cost["query"]
    assert cold["latency_p50_s"] > 0 and cold["latency_p50_low_s"] is None  # 5 timings: no 95% interval
    assert cold["latency_p50_warm_s"] is None and cold["latency_p50_warm_low_s"] is None  # keeps no prefix
    assert EvalSettings().latency_sample >= 20


# ------------------------------------------------------------------ throughput


def test_throughput_finds_the_best_batch_size_by_the_time_rule() -> None:
    task, test = _task_and_test(40)
    lm = BatchedLM(batch_size=4, forward_s=0.02)
    adapted = ZeroShotConfig().fit(task, [], [], FitContext.of(lm))
    settings = EvalSettings(latency_sample=6, throughput_batch_sizes=(1, 4, 16), throughput_sample=32)
    q = evaluate(adapted, task, test, settings=settings).cost["query"]
    points = {p["batch_size"]: p["qps"] for p in q["throughput"]}
    # main predict (40 queries at the LM's batch size 4), b = 1 from the 6 warm single-query timings, b = 16 timed
    assert sorted(points) == [1, 4, 16]
    assert points[1] == pytest.approx(1 / 0.02, rel=0.5) and points[4] == pytest.approx(4 / 0.02, rel=0.5)
    assert points[16] == pytest.approx(16 / 0.02, rel=0.5)
    assert q["throughput_batch_size"] == 16 and q["throughput_qps"] == points[16]
    assert lm.batch_size == 4  # restored
    timed = [entry for entry in lm.log if entry[1] == 16]
    assert timed == [(16, 16, True), (16, 16, True)]  # 32 sampled queries, 2 calls, prefix kept across calls
    assert q["measure_seconds"]["throughput"] > 0 and q["measure_seconds"]["latency"] > 0


def test_throughput_without_a_batch_size_predicts_in_calls_of_b() -> None:
    """An artifact whose LM has no batch size (an embedder, an API) is measured by the queries per call alone."""
    task, test = _task_and_test(12)
    lm = ScriptedLM(SENTIMENT_KEYWORDS)
    adapted = ZeroShotConfig().fit(task, [], [], FitContext.of(lm))
    lm.calls.clear()
    settings = EvalSettings(latency_sample=0, throughput_batch_sizes=(1, 4, 64), throughput_sample=8)
    q = evaluate(adapted, task, test, settings=settings).cost["query"]
    assert batch_size_of(lm) is None
    assert lm.calls == [12] + [1] * 8 + [4, 4] + [8]  # main predict, then b = 1, 4 and 64 (the whole sample of 8)
    assert [p["batch_size"] for p in q["throughput"]] == [1, 4, 8, 12]
    assert all(p["qps"] > 0 for p in q["throughput"])
    assert evaluate(adapted, task, test, settings=QUIET).cost["query"]["throughput"] == []


def test_batch_size_set_restores_and_ignores_backends_without_one() -> None:
    lm = BatchedLM(batch_size=32)
    with batch_size_set(lm, 8) as applied:
        assert applied and lm.batch_size == 8
    assert lm.batch_size == 32
    with pytest.raises(RuntimeError), batch_size_set(lm, 2):
        raise RuntimeError("boom")
    assert lm.batch_size == 32
    plain = ScriptedLM(SENTIMENT_KEYWORDS)
    with batch_size_set(plain, 8) as applied:
        assert not applied and not hasattr(plain, "batch_size")


# ------------------------------------------------------------------ API tokens and price


@pytest.fixture
def server() -> Iterator[FaultServer]:
    srv = FaultServer("ok").start()
    yield srv
    srv.close()


def _api_eval(srv: FaultServer, settings: EvalSettings, **spec: object):
    lm = build_lm(ModelSpec.parse({"name": "gpt-4o-mini", "backend": "api", "base_url": srv.base_url,
                                   "api": {"timeout_s": 5.0}, **spec}))
    task, test = _task_and_test(6)
    adapted = ZeroShotConfig().fit(task, [], [], FitContext.of(lm))
    return evaluate(adapted, task, test, settings=settings), lm


def test_api_tokens_per_query_are_the_servers_reported_usage(server: FaultServer) -> None:
    result, lm = _api_eval(server, QUIET)
    q = result.cost["query"]
    prompt_tokens, completion_tokens, answers = reported_by(server)  # all of it from the main predict here
    assert answers == 2 + 6 * 2  # the one-time echo probe, then one request per label of each of 6 queries
    assert q["api_input_tokens"] == pytest.approx(prompt_tokens / 6)
    assert q["api_output_tokens"] == pytest.approx(completion_tokens / 6) == pytest.approx(14 / 6)
    assert q["api_unreported_requests"] == 0
    assert q["token_price"] == {"input_per_mtok": 0.15, "output_per_mtok": 0.60, "source": PRICES_SOURCE}
    assert lm.token_price == TokenPrice(input_per_mtok=0.15, output_per_mtok=0.60)

    rec = CellRecord(key="k", strategy="zero_shot", options={}, n_train=0, seed=0, variant="zero_shot",
                     n_test=6, extra={"cost": result.cost}, family="prompt")
    by_hand = (prompt_tokens / 6 * 0.15 + completion_tokens / 6 * 0.60) / 1e6
    assert rec.query_cost(Scenario()) == pytest.approx(by_hand)
    own = Scenario(token_price=TokenPrice(input_per_mtok=2.0, output_per_mtok=10.0))
    assert rec.query_cost(own) == pytest.approx((prompt_tokens / 6 * 2.0 + completion_tokens / 6 * 10.0) / 1e6)


def test_timing_requests_are_not_counted_and_an_explicit_price_wins(server: FaultServer) -> None:
    quiet, _ = _api_eval(server, QUIET)
    second = FaultServer("ok").start()
    try:
        timed, lm = _api_eval(second, EvalSettings(latency_sample=3, throughput_batch_sizes=(1, 2)),
                              price={"input_per_mtok": 1.0, "output_per_mtok": 4.0})
        assert len(second.requests) > len(server.requests)  # the timings asked the server more
    finally:
        second.close()
    for key in ("api_input_tokens", "api_output_tokens", "api_unreported_requests"):
        assert timed.cost["query"][key] == quiet.cost["query"][key], key  # the main predict's only
    assert timed.cost["query"]["token_price"] == {"input_per_mtok": 1.0, "output_per_mtok": 4.0,
                                                  "source": "model spec price"}
    assert lm.price_source == "model spec price"


def test_local_backends_have_no_api_tokens_or_price() -> None:
    task, test = _task_and_test(4)
    lm = ScriptedLM(SENTIMENT_KEYWORDS)
    q = evaluate(ZeroShotConfig().fit(task, [], [], FitContext.of(lm)), task, test, settings=QUIET).cost["query"]
    assert (q["api_input_tokens"], q["api_output_tokens"], q["api_unreported_requests"]) == (0, 0, 0)
    assert q["token_price"] is None and token_price_of(lm) is None
    unpriced = build_lm(ModelSpec(name="my-own-model", backend="api", base_url="http://127.0.0.1:9/v1"))
    assert token_price_of(unpriced) is None


# ------------------------------------------------------------------ a cell's own peak memory


class _Module:
    """Stands in for a torch module: parameters and buffers with numel/element_size/device."""

    def __init__(self, n_bytes: int) -> None:
        import torch

        self.weight = torch.zeros(n_bytes // 4, dtype=torch.float32)

    def parameters(self):
        return iter([self.weight])

    def buffers(self):
        return iter([])


class _Holder:
    def __init__(self, n_bytes: int, name: str = "held") -> None:
        self.model = _Module(n_bytes)
        self.name = name


def test_the_pool_counts_models_used_that_were_loaded_before() -> None:
    old_lm = _Holder(4 * MB)
    pool = ModelPool(lms={"default": old_lm, "other": _Holder(8 * MB)}, embedders={"old": _Holder(2 * MB)})
    with pool.track() as use:
        assert pool.lm() is old_lm and pool.lm() is old_lm
        pool.embedder("old")
    assert use.used == {("lm", "default"): 2, ("embedder", "old"): 1} and not use.built
    assert pool.held_bytes(use) == 6 * MB == pool.held_bytes(use, "cpu")  # "other" was not used
    assert pool.held_bytes(use, "cuda") == 0
    assert module_bytes(old_lm.model) == 4 * MB and module_bytes(object()) == 0
    pool.lm()  # outside a window: not recorded
    assert use.used[("lm", "default")] == 2


@linux_only
def test_a_window_does_not_charge_memory_the_process_already_held() -> None:
    held = bytearray(400 * MB)
    held[::4096] = b"\x01" * len(range(0, len(held), 4096))  # resident
    window = MemoryWindow.open()
    own = bytearray(40 * MB)
    own[::4096] = b"\x01" * len(range(0, len(own), 4096))
    peak = cell_peak(window, lambda device: 3 * MB if device == "cpu" else 0)
    del own
    assert peak["peak_memory_kind"] == CELL_RSS and peak["models_held_bytes"] == 3 * MB
    assert 40 * MB <= peak["peak_memory_bytes"] < 120 * MB  # its 40 MB + the 3 MB model, not the 400 MB held
    assert peak["peak_process_rss_bytes"] >= 400 * MB
    del held


@linux_only
def test_a_probe_like_cell_after_a_big_allocation_does_not_report_it(tmp_path: Path, one_thread) -> None:
    """A model-free cell (the majority plugin: like an embedding probe, it holds no LLM) in a process that holds
    500 MB (as prompt cells leave their LLM loaded) reports its own small peak; the prompt cells report theirs,
    the later one with the shared model it used (loaded by the earlier one) counted in."""
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.runner import run_experiment

    write_toy_task(tmp_path / "task")
    plugin = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "majority.py"
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: peak\ntask: task/task.yaml\nmodel: tiny-random-llama\ntrain_sizes: [8]\nseeds: [0]\n"
                   f"limit: 8\nplugins: ['{plugin}']\nstrategies:\n  - zero_shot\n  - majority\n"
                   f"  - name: few_shot\n    options: {{k: 2, selection: balanced}}\n", encoding="utf-8")
    held = bytearray(500 * MB)
    held[::4096] = b"\x01" * len(range(0, len(held), 4096))
    records = {r.strategy: r for r in run_experiment(load_experiment(exp), tmp_path / "run", progress=False)}
    assert [r.status for r in records.values()] == ["done"] * 3
    for rec in records.values():
        train = rec.extra["cost"]["train"]
        assert train["peak_memory_kind"] == CELL_RSS and train["peak_process_rss_bytes"] >= 500 * MB
        assert rec.peak_memory_bytes is not None
        assert rec.peak_memory_bytes < train["peak_process_rss_bytes"] - 400 * MB, rec.strategy  # not the 500 MB
        doc = json.loads((tmp_path / "run" / rec.artifact_dir / "metrics.json").read_text())
        assert doc["cost"]["train"]["peak_memory_bytes"] == rec.peak_memory_bytes  # the file says the same
    probe = records["majority"]
    assert probe.peak_memory_bytes < 100 * MB and probe.extra["cost"]["train"]["models_held_bytes"] == 0
    held_by = sorted(records[s].extra["cost"]["train"]["models_held_bytes"] for s in ("zero_shot", "few_shot"))
    assert held_by[0] == 0 and held_by[1] > 0  # the first prompt cell loaded the model, the second used it
    del held
