"""Kill -9 in the middle of a fine-tune, resume, and end where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_finetune_toy import write_toy_task

REPO = Path(__file__).resolve().parents[1]


def _cmd(task: Path, out: Path, *extra: str) -> list[str]:
    # 48 examples at batch 8: 6 steps an epoch; 3 epochs (18 steps) are below min_steps=30, raised to 5 epochs (30
    # steps): the resumed run must plan the same raised schedule
    sets = {"batch_size": 8, "save_every": 2, "eval_every": 6, "eval_limit": 8, "learning_rate": 1e-2,
            "rank": 4, "log_every": 1, "min_steps": 30}
    # the `adaptlab finetune` command (`python -m adaptlab`, as under `accelerate launch -m adaptlab`);
    # its progress bars only draw on a terminal, and these runs write to pipes
    cmd = [sys.executable, "-m", "adaptlab", "finetune", str(task), "--model", "tiny-random-llama",
           "--method", "lora", "--n-train", "48", "--epochs", "3", "--out", str(out), "--limit", "4",
           "--keep-checkpoints"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd + list(extra)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = "1"  # two runs share a 2-core machine: no OpenMP oversubscription
    return env


def _checkpoint_steps(out: Path) -> list[int]:
    """Checkpoints of a run in progress: in its partial folder (a run is moved into --out when complete)."""
    from adaptlab.files import partial_dir

    root = partial_dir(out) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in root.glob("step-*") if (p / "state.json").is_file())


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    task = write_toy_task(tmp_path / "task")
    full_out, killed_out = tmp_path / "full", tmp_path / "killed"
    # the uninterrupted reference runs alongside the run we kill
    reference = subprocess.Popen(_cmd(task, full_out), env=_env(), cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cmd(task, killed_out), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.poll() is None:
        if any(s >= 8 for s in _checkpoint_steps(killed_out)):  # past the first evaluation, mid-run
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (killed_out / "metrics.json").exists() and not killed_out.exists()  # nothing half-written in --out
    killed_at = max(_checkpoint_steps(killed_out))
    assert 8 <= killed_at < 30

    resumed = subprocess.run(_cmd(task, killed_out, "--resume"), env=_env(), cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]

    a = json.loads((full_out / "adapted.json").read_text())["train"]
    b = json.loads((killed_out / "adapted.json").read_text())["train"]
    assert b["cost"]["resumed_from"] and b["cost"]["resumed_from"][0] >= 8
    assert a["cost"]["steps"] == b["cost"]["steps"] == 30
    assert a["cost"]["total_steps"] == b["cost"]["total_steps"] == 30
    assert a["cost"]["epochs_planned"] == b["cost"]["epochs_planned"] == a["cost"]["epochs_completed"] == 5
    assert b["final_dev"]["dev_loss"] == pytest.approx(a["final_dev"]["dev_loss"], abs=1e-5)
    assert b["final_dev"]["dev_metric"] == a["final_dev"]["dev_metric"]
    ma = json.loads((full_out / "metrics.json").read_text())
    mb = json.loads((killed_out / "metrics.json").read_text())
    assert mb["metric"]["value"] == ma["metric"]["value"]
    wa, wb = _adapter(full_out), _adapter(killed_out)
    assert wa.keys() == wb.keys()
    assert all(float((wa[k] - wb[k]).abs().max()) < 1e-5 for k in wa)
    # same training losses after the resume point as the uninterrupted run
    la = [json.loads(x) for x in (full_out / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (killed_out / "train_log.jsonl").read_text().splitlines()]
    loss_a = {h["step"]: h["loss"] for h in la if "loss" in h}
    loss_b = {h["step"]: h["loss"] for h in lb if "loss" in h}
    assert loss_b.keys() == loss_a.keys()
    assert all(loss_b[s] == pytest.approx(loss_a[s], abs=1e-5) for s in loss_a)
