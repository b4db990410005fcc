"""Benchmark: fine-tuning methods on SST-2, and adaptlab's LoRA training speed vs a plain `Trainer`.

Part 1 (``--methods``): for every method x training size x seed, one ``adaptlab finetune`` in its own process
(so peak memory is that run's), reporting test accuracy (``--limit`` caps the test examples), training
seconds, tokens/second, peak memory and trainable parameters.

Part 2 (``--compare-trainer``): the same LoRA model, data, batch size, epochs and learning rate trained
(a) by adaptlab's recipe (length-grouped batches, dynamic padding, output layer on the answer tokens
only) and (b) by a plain ``transformers.Trainer`` + peft (random batches padded to the longest in each
batch, full logits), each in its own process, training only (no evaluation during training); tokens/second
counts real (non-pad) tokens over training wall seconds. After training each side computes the same dev loss
(mean answer-token cross-entropy on ``--compare-dev`` dev examples, one shared function), so throughput can
be compared at equal loss; each prints its peak RSS.

MFU (model FLOPs utilisation, see ``_hw.py``): real tokens/second x 6 x non-embedding parameters over this
machine's float32 matmul peak at the same thread count (measured once by the parent). For LoRA the frozen
base needs no weight gradients, so the work actually done is closer to 4N per token: ``mfu_4n`` is also
printed.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_finetune.py --sizes 64 256 1024 --limit 200
    PYTHONPATH=src .venv/bin/python benchmarks/bench_finetune.py --methods --compare-trainer --compare-n 256

Results are printed as a table and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALL_METHODS = ["lora", "prompt_tuning", "ia3", "full", "embedding_probe"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


# ----------------------------------------------------------------------------- part 1: methods
def run_method(task: str, model: str, method: str, n: int, seed: int, args: argparse.Namespace,
               work: Path) -> dict:
    out = work / f"{method}-n{n}-s{seed}"
    cmd = [sys.executable, "-m", "adaptlab", "finetune", task, "--model", model, "--method", method,
           "--n-train", str(n), "--epochs", str(args.epochs), "--out", str(out), "--seed", str(seed)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if method != "embedding_probe":
        cmd += ["--set", f"batch_size={args.batch_size}", "--set", f"eval_limit={args.eval_limit}",
                "--set", "save_every=0", "--set", "progress=false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"method": method, "n_train": n, "seed": seed, "wall_seconds": wall}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    train = metrics["cost"]["train"]
    row.update({"accuracy": metrics["metric"]["value"],
                "ci": [metrics["metric"]["ci_low"], metrics["metric"]["ci_high"]],
                "train_seconds": train.get("seconds"), "tokens_per_second": train.get("tokens_per_second"),
                "peak_memory_mb": (train.get("peak_memory_bytes") or 0) / 2**20,
                "trainable_params": train.get("trainable_params"), "train_flops": train.get("flops"),
                "artifact_bytes": train.get("artifact_bytes")})
    row["query_flops"] = metrics["cost"]["query"].get("flops")
    row["latency_p50_s"] = metrics["cost"]["query"].get("latency_p50_s")
    return row


# ----------------------------------------------------------------------------- part 2: vs Trainer
def _encoded(task_path: str, model: str, n: int, seed: int, max_length: int, n_dev: int = 0):
    """(task, train examples, loaded model, encoded train, encoded first ``n_dev`` dev examples)."""
    from adaptlab.data import load_splits, load_task, nested_subsets
    from adaptlab.models import load_model
    from adaptlab.strategies.finetune.batching import encode_pairs
    from adaptlab.strategies.finetune.gradient import training_pairs, zero_shot_prompt

    task = load_task(task_path)
    splits = load_splits(task, seed=seed)
    train = nested_subsets(splits.train, [n], seed=seed, label_of=task.label_of)[n]
    loaded = load_model(model)
    prompt = zero_shot_prompt(task, loaded.name)
    enc = encode_pairs(loaded.tokenizer, training_pairs(prompt, task, train), max_length=max_length)
    dev = encode_pairs(loaded.tokenizer, training_pairs(prompt, task, splits.dev[:n_dev]), max_length=max_length)
    return task, train, loaded, enc, dev


def dev_loss(model, dev, pad_id: int, batch_size: int = 16) -> float | None:
    """Mean answer-token cross-entropy of ``model`` on encoded ``dev`` examples (same code for both sides)."""
    import torch

    from adaptlab.strategies.finetune.batching import IGNORE_INDEX, collate

    if not dev:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(dev), batch_size):
            b = collate(dev[i:i + batch_size], pad_id)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           position_ids=b["position_ids"]).logits[:, :-1].float()
            labels = b["labels"][:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                                             reduction="sum"))
            count += int((labels != IGNORE_INDEX).sum())
    return total / max(count, 1)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_adaptlab(ns: argparse.Namespace) -> dict:
    from adaptlab.strategies import FitContext, LoraConfig

    task, train, loaded, enc, dev = _encoded(ns.task, ns.model, ns.compare_n, ns.seeds[0], 512, ns.compare_dev)
    cfg = LoraConfig(epochs=ns.epochs, batch_size=ns.batch_size, learning_rate=1e-3, eval_metric=False,
                     keep_best=False, save_every=0, progress=False, warmup_ratio=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        adapted = cfg.fit(task, train, [], FitContext.of(loaded, seed=ns.seeds[0], work_dir=Path(tmp)))
    c = adapted.train_cost
    return {"runner": "adaptlab", "tokens": c["tokens"], "padded_tokens": c["padded_tokens"],
            "train_seconds": c["seconds"], "tokens_per_second": c["tokens"] / c["seconds"],
            "final_loss": [h["loss"] for h in adapted.history if "loss" in h][-1],
            "dev_loss": dev_loss(adapted.model, dev, loaded.tokenizer.pad_token_id), "steps": c["steps"],
            "peak_rss_mb": _peak_rss_mb()}


def worker_trainer(ns: argparse.Namespace) -> dict:
    import peft
    import torch
    from transformers import Trainer, TrainingArguments

    from adaptlab.strategies.finetune.batching import IGNORE_INDEX

    _, _, loaded, enc, dev = _encoded(ns.task, ns.model, ns.compare_n, ns.seeds[0], 512, ns.compare_dev)
    model = loaded.model
    model.config.use_cache = False
    lcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = peft.get_peft_model(model, lcfg)
    data = [{"input_ids": list(e.input_ids), "labels": list(e.labels)} for e in enc]
    pad = loaded.tokenizer.pad_token_id
    padded_tokens = [0]

    def collate(rows):  # pad to the longest sequence of the batch (the usual seq2seq collator)
        width = max(len(r["input_ids"]) for r in rows)
        padded_tokens[0] += width * len(rows)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows])
        labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in rows])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=ns.batch_size,
                                  num_train_epochs=ns.epochs, learning_rate=1e-3, warmup_steps=0.1,
                                  lr_scheduler_type="linear", logging_steps=1, save_strategy="no",
                                  report_to=[], seed=ns.seeds[0], use_cpu=not torch.cuda.is_available(),
                                  remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate)
        t0 = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - t0
    tokens = ns.epochs * sum(len(e) for e in enc)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"runner": "transformers.Trainer", "tokens": tokens, "padded_tokens": padded_tokens[0],
            "train_seconds": seconds, "tokens_per_second": tokens / seconds, "final_loss": losses[-1] if losses
            else None, "dev_loss": dev_loss(model, dev, pad), "steps": out.global_step, "peak_rss_mb": _peak_rss_mb()}


def compare(ns: argparse.Namespace) -> list[dict]:
    rows = []
    for runner in ("adaptlab", "trainer") * ns.compare_repeats:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", runner, "--task", ns.task,
               "--model", ns.model, "--compare-n", str(ns.compare_n), "--batch-size", str(ns.batch_size),
               "--epochs", str(ns.epochs), "--seeds", str(ns.seeds[0]), "--compare-dev", str(ns.compare_dev)]
        proc = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"runner": runner, "error": proc.stderr[-1500:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def add_mfu(rows: list[dict], n_params: int, peak_gflops: float) -> None:
    """``mfu`` (6N per real token) and ``mfu_4n`` (4N: frozen base, no weight gradients) on each row."""
    for r in rows:
        tps = r.get("tokens_per_second")
        if tps and n_params:
            r["mfu"] = 6 * n_params * tps / (peak_gflops * 1e9)
            r["mfu_4n"] = 4 * n_params * tps / (peak_gflops * 1e9)


def machine_peak(model: str) -> tuple[int, dict]:
    """(non-embedding parameters of ``model``, float32 matmul peak at this process's thread count)."""
    sys.path.insert(0, str(REPO / "src"))
    from _hw import matmul_peak, non_embedding_params

    from adaptlab.models import load_model

    return non_embedding_params(load_model(model).model), matmul_peak("float32")


# ----------------------------------------------------------------------------- main
def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(fmt(r.get(c)) for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=str(REPO / "tasks" / "sst2.yaml"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--methods", nargs="*", default=None, help=f"subset of {ALL_METHODS} (no value: all)")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 256, 1024])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=200, help="test examples per run")
    p.add_argument("--eval-limit", type=int, default=100, help="dev examples scored at each evaluation")
    p.add_argument("--compare-trainer", action="store_true")
    p.add_argument("--compare-n", type=int, default=256)
    p.add_argument("--compare-repeats", type=int, default=1)
    p.add_argument("--compare-dev", type=int, default=100, help="dev examples for the after-training dev loss")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_finetune.json"))
    p.add_argument("--worker", choices=["adaptlab", "trainer"], help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.worker:
        print(json.dumps((worker_adaptlab if ns.worker == "adaptlab" else worker_trainer)(ns)))
        return
    results: dict = {"task": ns.task, "model": ns.model, "epochs": ns.epochs, "batch_size": ns.batch_size,
                     "limit": ns.limit, "torch_threads_env": os.environ.get("OMP_NUM_THREADS")}
    n_params, peak = machine_peak(ns.model)
    results["matmul_peak"], results["non_embedding_params"] = peak, n_params
    print(f"float32 matmul peak {peak['gflops']:.1f} GFLOP/s ({peak['threads']} threads); MFU = 6 x "
          f"{n_params:,} non-embedding params x real tokens/s / peak", flush=True)
    if ns.methods is not None:
        methods = ns.methods or ALL_METHODS
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in ns.sizes:
                for method in methods:
                    for seed in ns.seeds:
                        rows.append(run_method(ns.task, ns.model, method, n, seed, ns, Path(tmp)))
                        print(json.dumps(rows[-1]), flush=True)
        add_mfu(rows, n_params, peak["gflops"])
        results["methods"] = rows
        print(_table(rows, ["method", "n_train", "seed", "accuracy", "train_seconds", "tokens_per_second",
                            "mfu", "peak_memory_mb", "trainable_params", "error"]))
    if ns.compare_trainer:
        rows = compare(ns)
        add_mfu(rows, n_params, peak["gflops"])
        results["trainer_comparison"] = {"n_train": ns.compare_n, "n_dev": ns.compare_dev, "rows": rows}
        print(_table(rows, ["runner", "tokens", "padded_tokens", "train_seconds", "tokens_per_second",
                            "mfu", "mfu_4n", "final_loss", "dev_loss", "peak_rss_mb", "steps"]))
        tps = {r["runner"]: [x["tokens_per_second"] for x in rows if x.get("runner") == r["runner"]
                             and "tokens_per_second" in x] for r in rows}
        if tps.get("adaptlab") and tps.get("transformers.Trainer"):
            import statistics

            ratio = statistics.median(tps["adaptlab"]) / statistics.median(tps["transformers.Trainer"])
            results["trainer_comparison"]["speedup"] = ratio
            print(f"adaptlab / Trainer tokens/second (medians): {ratio:.2f}x")
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
