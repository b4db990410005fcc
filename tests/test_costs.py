"""Cost accounting: the FLOPs formulas, and a peak-memory window that a compare cell opens for itself
(so a cheap cell does not report the peak of an expensive cell that ran before it in the same process)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adaptlab.models.costs import forward_flops, peak_rss_bytes, reset_peak_rss, train_flops
from test_finetune_toy import one_thread_torch, write_toy_task

MB = 1 << 20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak reset needs /proc (Linux)")


def _touch(n_bytes: int) -> bytearray:
    """A buffer whose every page is resident."""
    buf = bytearray(n_bytes)
    buf[::4096] = b"\x01" * len(range(0, n_bytes, 4096))
    return buf


def test_flops_formulas() -> None:
    assert forward_flops(1000, 7) == 2 * 1000 * 7
    assert train_flops(1000, 7) == 6 * 1000 * 7


@linux_only
def test_reset_starts_a_new_peak_window() -> None:
    buf = _touch(400 * MB)
    high = peak_rss_bytes()
    del buf
    assert peak_rss_bytes() >= high - 16 * MB  # a peak stays until reset (RSS counters are approximate)
    assert reset_peak_rss()
    low = peak_rss_bytes()
    assert low < high - 300 * MB
    buf = _touch(100 * MB)
    assert peak_rss_bytes() >= low + 90 * MB  # and grows again from there
    del buf


one_thread = pytest.fixture(one_thread_torch)


@linux_only
def test_compare_cell_reports_its_own_peak(tmp_path: Path, one_thread) -> None:
    """A 1 GB spike before the run is not charged to the cells run after it in the same process."""
    from adaptlab.experiment import load_experiment
    from adaptlab.experiment.runner import run_experiment

    write_toy_task(tmp_path / "task")
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: peak\ntask: task/task.yaml\nmodel: tiny-random-llama\ntrain_sizes: [8]\n"
                   "seeds: [0]\nlimit: 8\nstrategies:\n  - zero_shot\n  - name: few_shot\n"
                   "    options: {k: 2, selection: balanced}\n", encoding="utf-8")
    buf = _touch(1024 * MB)
    spike = peak_rss_bytes()
    del buf
    records = run_experiment(load_experiment(exp), tmp_path / "run", progress=False)
    assert [r.status for r in records] == ["done", "done"]
    for rec in records:
        assert rec.peak_memory_bytes is not None
        assert 0 < rec.peak_memory_bytes < spike - 700 * MB, rec.variant
