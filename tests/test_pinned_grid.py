"""The redesign of issue 12 changed structure, not behaviour: a pinned small grid on the tiny model (every built-in
strategy once) gives the same cell keys, metrics, intervals, predictions and label probabilities as the code
before it (tests/fixtures/pinned/expected.json, written by make_expected.py from that code).

Issue 14 made ``format: auto`` the prompt strategies' default (chat for this model); the pinned experiment writes
``format: plain`` on its prompt entries to keep pinning the old behaviour. A written option is part of the cell key,
so those keys differ from the old ones by exactly that option: the test checks that the key without it is the old
one (`PINNING_OPTIONS`), and that every other cell kept its key as it was."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
from pathlib import Path

import pytest

PINNED = Path(__file__).parent / "fixtures" / "pinned"
PINNING_OPTIONS = {"format": "plain"}
"""Options the pinned experiment writes to keep the old behaviour under newer defaults (see the docstring)."""


def _maker():
    spec = importlib.util.spec_from_file_location("make_expected", PINNED / "make_expected.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _payloads(run_dir: Path) -> dict[str, dict]:
    """What each cell's key hashes, by key (recorded with the cell in the store)."""
    conn = sqlite3.connect(run_dir / "adaptlab.db")
    try:
        return {key: json.loads(extra)["cell"] for key, extra in conn.execute("SELECT key, extra FROM cells")}
    finally:
        conn.close()


def _old_key(payload: dict) -> str:
    """The key the cell had before `PINNING_OPTIONS` were written (the pinning options taken out)."""
    from adaptlab.experiment.grid import cell_key

    options = {k: v for k, v in payload["options"].items() if PINNING_OPTIONS.get(k, object()) != v}
    return cell_key({**payload, "options": options})


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
    results = maker.cell_results(out)
    payloads = _payloads(out)
    for got in results.values():
        got["payload"] = payloads[got["key"]]
    return results


def test_every_pinned_cell_is_unchanged(rerun: dict[str, dict]) -> None:
    expected = json.loads((PINNED / "expected.json").read_text(encoding="utf-8"))
    assert sorted(rerun) == sorted(expected)
    for name, want in expected.items():
        got = rerun[name]
        pinned = {k: v for k, v in PINNING_OPTIONS.items() if got["payload"]["options"].get(k) == v}
        if pinned:  # the key differs from the old one by exactly the options that pin the old behaviour
            assert got["key"] != want["key"] and _old_key(got["payload"]) == want["key"], name
            assert got["strategy"] in ("zero_shot", "few_shot", "calibrate", "prompt_search"), name
        else:
            assert got["key"] == want["key"], f"{name}: the cell key changed (old runs would not resume)"
        assert got["status"] == want["status"] == "done", name
        for field in ("value", "ci_low", "ci_high"):
            assert got[field] == pytest.approx(want[field], abs=1e-9), (name, field)
        assert got["n_test"] == want["n_test"] and got["trainable_params"] == want["trainable_params"], name
        assert got["query_prompt_tokens"] == pytest.approx(want["query_prompt_tokens"]), name
        assert got["predictions"] == want["predictions"], name
        for i, (g, w) in enumerate(zip(got["scores"], want["scores"], strict=True)):
            assert g.keys() == w.keys() and all(abs(g[k] - w[k]) <= 2e-4 for k in w), (name, i, g, w)
