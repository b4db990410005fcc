"""Smoke test of ``benchmarks/bench_llamacpp.py``: all three sides (adaptlab's HF backend, adaptlab's API backend
against the real llama.cpp server adaptlab starts, llama.cpp in-process) score the same SST-2 prompts.

The API side reads one-token labels from one next-token request per query (no echo), so two examples at 0 and
2 shots take seconds per side."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
N = 2


def _load_bench():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed (pip install 'adaptlab[server]')")
    if os.environ.get("ADAPTLAB_SKIP_SERVER_TESTS"):
        pytest.skip("ADAPTLAB_SKIP_SERVER_TESTS is set")
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_llamacpp", BENCH / "bench_llamacpp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.server
def test_bench_llamacpp_smoke(tmp_path: Path, shared_data: Path) -> None:
    bench = _load_bench()
    out = tmp_path / "x.json"
    assert bench.main(["--smoke", "--n", str(N), "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    summary = doc["summary"]
    assert {r["side"] for r in doc["runs"]} == {"hf", "api", "llamacpp"}
    assert summary["api_server"]["scoring"] == "next_token"  # no echo: the server's prompt cache serves the prefix
    assert summary["continuation_tokens"] == {" negative": 1, " positive": 1}
    assert set(summary["results"]) == {"0", "2"}
    result = summary["results"]["2"]
    for side in ("hf", "api", "llamacpp"):
        assert len(result["sides"][side]["predictions"]) == N
        assert result["sides"][side]["eps"] > 0
    assert set(result["agreement"]) == {"hf/api", "hf/llamacpp", "api/llamacpp"}
    assert all(0.0 <= v <= 1.0 for v in result["agreement"].values())
    # measured: hf and llamacpp agree on every prediction (2 examples: max |dLL| 0.30 at 0 shots, 0.06 at 1 shot)
    assert result["agreement"]["hf/llamacpp"] >= 0.5
    assert summary["api_prefix"]["probe"]["next_token_topk"]["seconds"] > 0
