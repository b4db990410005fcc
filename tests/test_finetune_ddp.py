"""Two-process DDP (gloo, CPU) through `accelerate launch`: trains, splits the data, writes the same artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_finetune_toy import write_toy_task

REPO = Path(__file__).resolve().parents[1]


def test_two_process_ddp_on_cpu_trains_and_writes_artifact(tmp_path: Path) -> None:
    from adaptlab.data import load_splits, load_task, nested_subsets
    from adaptlab.models import load_tokenizer
    from adaptlab.strategies.finetune.batching import encode_pairs
    from adaptlab.strategies.finetune.gradient import training_pairs, zero_shot_prompt

    task_path = write_toy_task(tmp_path / "task")
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    # accelerate >= 1.0 starts several CPU processes through its torch.distributed launcher
    # (--multi_gpu); on a machine without GPUs adaptlab then selects DDP over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "adaptlab", "finetune", str(task_path), "--model", "tiny-random-llama", "--method", "lora",
           "--n-train", "48", "--epochs", "2", "--out", str(out), "--limit", "4",
           "--set", "batch_size=4", "--set", "learning_rate=1e-2", "--set", "log_every=1",
           "--set", "eval_limit=4", "--set", "min_steps=null"]  # the 2 epochs as written
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("artifact: ") == 1  # only the main process evaluates and reports

    doc = json.loads((out / "metrics.json").read_text())
    train = doc["cost"]["train"]
    assert train["num_processes"] == 2
    assert train["steps"] == 2 * 48 // (4 * 2)  # each step consumes one batch per process
    # every training example was seen once per epoch across the two processes (no duplicates)
    task = load_task(task_path)
    examples = nested_subsets(load_splits(task).train, [48], seed=0, label_of=task.label_of)[48]
    tok = load_tokenizer("tiny-random-llama")
    encoded = encode_pairs(tok, training_pairs(zero_shot_prompt(task, "tiny-random-llama"), task, examples),
                           max_length=512)
    assert train["tokens"] == 2 * sum(len(e) for e in encoded)
    losses = [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(x)]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    artifact = json.loads((out / "adapted.json").read_text())
    assert artifact["kind"] == "finetuned" and artifact["weights"] == "adapter"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
