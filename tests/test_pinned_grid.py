"""The redesign of issue 12 changed structure, not behaviour: a pinned small grid on the tiny model (every built-in
strategy once) gives the same cell keys, metrics, intervals, predictions and label probabilities as the code
before it (tests/fixtures/pinned/expected.json, written by make_expected.py from that code)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

PINNED = Path(__file__).parent / "fixtures" / "pinned"


def _maker():
    spec = importlib.util.spec_from_file_location("make_expected", PINNED / "make_expected.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rerun(tmp_path_factory) -> dict[str, dict]:
    maker = _maker()
    out = tmp_path_factory.mktemp("pinned") / "run"
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the expected file was written with one thread
    try:
        maker.run_grid(out)
    finally:
        os.environ.pop("OMP_NUM_THREADS") if old is None else os.environ.__setitem__("OMP_NUM_THREADS", old)
    return maker.cell_results(out)


def test_every_pinned_cell_is_unchanged(rerun: dict[str, dict]) -> None:
    expected = json.loads((PINNED / "expected.json").read_text(encoding="utf-8"))
    assert sorted(rerun) == sorted(expected)
    for name, want in expected.items():
        got = rerun[name]
        assert got["key"] == want["key"], f"{name}: the cell key changed (old runs would not resume)"
        assert got["status"] == want["status"] == "done", name
        for field in ("value", "ci_low", "ci_high"):
            assert got[field] == pytest.approx(want[field], abs=1e-9), (name, field)
        assert got["n_test"] == want["n_test"] and got["trainable_params"] == want["trainable_params"], name
        assert got["query_prompt_tokens"] == pytest.approx(want["query_prompt_tokens"]), name
        assert got["predictions"] == want["predictions"], name
        for i, (g, w) in enumerate(zip(got["scores"], want["scores"], strict=True)):
            assert g.keys() == w.keys() and all(abs(g[k] - w[k]) <= 2e-4 for k in w), (name, i, g, w)
