"""Benchmark: adaptlab's LoRA training loop vs ``transformers.Trainer`` + peft, both at their best settings.

Both sides train the same LoRA (r 8, alpha 16, dropout 0.05 on q/k/v/o) on the same encoded examples
(adaptlab's own zero-shot fine-tuning format, answer tokens labelled, prompt tokens masked with -100), with
the same micro-batch, epochs, learning rate, linear schedule with 10% warm-up, AdamW, gradient clipping at
1.0 and seed, and both batch by length: adaptlab's length-grouped batches, ``Trainer`` with
``train_sampling_strategy="group_by_length"`` (transformers 5 spelling of ``group_by_length=True``: its LengthGroupedSampler) and the usual pad-to-longest collator. Each run is its
own process (so its peak RSS is its own) with the same thread count. Timed the same way on both sides: the
training loop only (adaptlab's recipe timer; a ``TrainerCallback`` from ``on_train_begin`` to
``on_train_end``), and the whole process beside it. After training, both compute the same dev loss (mean
answer-token cross-entropy on ``--dev`` dev examples, one shared function), so speed is compared at
equal loss.

MFU: real (non-pad) tokens/second x 4 x non-embedding parameters (the frozen base runs a forward, 2N, and
an activation-gradient backward, 2N; LoRA's own weight gradients are negligible) over this machine's peak
measured in the same process right after training: ``F.linear`` at the model's own layer shapes and a
batch's row count (``_hw.shape_peak``). A value above 1 fails the script.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trainer.py --n 128 --repeats 3 --threads 1

Writes ``benchmarks/results/bench_trainer.json`` through the harness (every repeat, the machine, the command).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, Harness, add_harness_arguments, command_line, median, thread_env

SIDES = ("adaptlab", "trainer")
LR = 1e-3
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def _encoded(ns: argparse.Namespace):
    """(task, train examples, loaded model, encoded train, encoded dev) in adaptlab's fine-tuning format."""
    from adaptlab.data import load_splits, load_task, nested_subsets
    from adaptlab.models import load_model
    from adaptlab.strategies.finetune.batching import encode_pairs
    from adaptlab.strategies.finetune.gradient import training_pairs, zero_shot_prompt

    task = load_task(ns.task)
    splits = load_splits(task, seed=ns.seed)
    train = nested_subsets(splits.train, [ns.n], seed=ns.seed, label_of=task.label_of)[ns.n]
    loaded = load_model(ns.model)
    tok = loaded.tokenizer
    prompt = zero_shot_prompt(task, loaded.name, None, tok)  # the format adaptlab's fit trains on
    enc = encode_pairs(tok, training_pairs(prompt, task, train, tok), max_length=512)
    dev = encode_pairs(tok, training_pairs(prompt, task, splits.dev[:ns.dev], tok), max_length=512)
    return task, train, loaded, enc, dev


def dev_loss(model, dev, pad_id: int, batch_size: int = 16) -> float | None:
    """Mean answer-token cross-entropy of ``model`` on encoded ``dev`` examples (the same code for both sides)."""
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


def _finish(row: dict, model, enc, ns: argparse.Namespace, base) -> dict:
    """Add dev loss, the in-run peak at the model's shapes and MFU (4N per real token) to a side's row."""
    import resource

    from _hw import linear_shapes, mfu, non_embedding_params, shape_peak

    n_params = non_embedding_params(base)
    rows = ns.batch_size * round(statistics.mean(len(e) for e in enc))
    peak = shape_peak(linear_shapes(base), rows)
    flops = 4 * n_params * row["tokens"]
    row.update(non_embedding_params=n_params, peak=peak, flops=flops,
               mfu=mfu(flops, row["loop_seconds"], peak["gflops"]),
               tokens_per_second=row["tokens"] / row["loop_seconds"],
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def worker_adaptlab(ns: argparse.Namespace) -> dict:
    from adaptlab.strategies import FitContext, LoraConfig

    task, train, loaded, enc, dev = _encoded(ns)
    cfg = LoraConfig(rank=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"], target_modules=LORA["targets"],
                     epochs=ns.epochs, batch_size=ns.batch_size, learning_rate=LR, warmup_ratio=0.1,
                     min_steps=None, eval_metric=False, keep_best=False, select_on_dev=False, save_every=0,
                     progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        adapted = cfg.fit(task, train, [], FitContext.of(loaded, seed=ns.seed, work_dir=Path(tmp)))
    c = adapted.train_cost
    row = {"tokens": c["tokens"], "padded_tokens": c["padded_tokens"], "loop_seconds": c["seconds"],
           "steps": c["steps"], "final_loss": [h["loss"] for h in adapted.history if "loss" in h][-1],
           "dev_loss": dev_loss(adapted.model, dev, loaded.tokenizer.pad_token_id)}
    return _finish(row, adapted.model, enc, ns, adapted.model)


def worker_trainer(ns: argparse.Namespace) -> dict:
    import peft
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from adaptlab.strategies.finetune.batching import IGNORE_INDEX

    _, _, loaded, enc, dev = _encoded(ns)
    model = loaded.model
    model.config.use_cache = False
    model = peft.get_peft_model(model, peft.LoraConfig(
        task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"]))
    data = [{"input_ids": list(e.input_ids), "labels": list(e.labels)} for e in enc]
    pad = loaded.tokenizer.pad_token_id
    padded = [0]
    loop: dict[str, float] = {}

    def collate(rows):  # pad to the longest sequence of the batch (the usual collator)
        width = max(len(r["input_ids"]) for r in rows)
        padded[0] += width * len(rows)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in rows])
        labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in rows])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    class LoopTimer(TrainerCallback):
        def on_train_begin(self, *a, **kw):
            loop["start"] = time.perf_counter()

        def on_train_end(self, *a, **kw):
            loop["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=ns.batch_size,
                                  num_train_epochs=ns.epochs, learning_rate=LR, warmup_steps=0.1,
                                  lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0,
                                  train_sampling_strategy="group_by_length", logging_steps=1, save_strategy="no", report_to=[],
                                  seed=ns.seed, use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
                                  disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate,
                          callbacks=[LoopTimer()])
        out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    row = {"tokens": ns.epochs * sum(len(e) for e in enc), "padded_tokens": padded[0],
           "loop_seconds": loop["end"] - loop["start"], "steps": out.global_step,
           "final_loss": losses[-1] if losses else None, "dev_loss": dev_loss(model, dev, pad)}
    return _finish(row, model, enc, ns, model.get_base_model())


def run_side(side: str, ns: argparse.Namespace) -> dict:
    """One training run of ``side`` in its own process; its row plus the whole process's seconds.

    ``--smoke`` runs the worker in this process instead (seconds, not a measurement)."""
    if ns.smoke:
        start = time.perf_counter()
        row = (worker_adaptlab if side == "adaptlab" else worker_trainer)(ns)
        return {**row, "process_seconds": time.perf_counter() - start}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--task", ns.task, "--model",
           ns.model, "--n", str(ns.n), "--dev", str(ns.dev), "--batch-size", str(ns.batch_size), "--epochs",
           str(ns.epochs), "--seed", str(ns.seed), "--threads", str(ns.threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(ns.threads), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["process_seconds"] = time.perf_counter() - start
    return row


def summarise(runs: dict[str, list[dict]]) -> dict:
    out: dict = {}
    for side, rows in runs.items():
        out[side] = {k: median(rows, k) for k in ("loop_seconds", "process_seconds", "tokens_per_second", "mfu",
                                                  "dev_loss", "final_loss", "peak_rss_mb")}
        out[side].update(tokens=rows[0]["tokens"], padded_tokens=rows[0]["padded_tokens"], steps=rows[0]["steps"],
                         peak_gflops=median([r["peak"] for r in rows], "gflops"))
    if set(runs) == set(SIDES):
        a, t = out["adaptlab"], out["trainer"]
        out["speedup_loop"] = t["loop_seconds"] / a["loop_seconds"]
        out["speedup_process"] = t["process_seconds"] / a["process_seconds"]
        out["paired_speedups_loop"] = [y["loop_seconds"] / x["loop_seconds"]
                                       for x, y in zip(runs["adaptlab"], runs["trainer"])]
        out["dev_loss_difference"] = a["dev_loss"] - t["dev_loss"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default=str(REPO / "tasks" / "sst2.yaml"))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--n", type=int, default=128, help="training examples")
    p.add_argument("--dev", type=int, default=100, help="dev examples for the after-training dev loss")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of each side")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    add_harness_arguments(p, "bench_trainer.json")
    ns = p.parse_args(argv)
    if ns.worker:
        import torch

        torch.set_num_threads(ns.threads)
        print(json.dumps((worker_adaptlab if ns.worker == "adaptlab" else worker_trainer)(ns)))
        return 0
    if ns.smoke:
        ns.model, ns.n, ns.dev = "tiny-random-llama", 16, 4
    h = Harness("bench_trainer", ns, {k: v for k, v in vars(ns).items() if k != "worker"})
    h.command = command_line(__file__, argv)
    runs = h.alternate("lora", {side: (lambda s=side: run_side(s, ns)) for side in SIDES})
    summary = summarise(runs)
    for side in SIDES:
        s = summary[side]
        print(f"{side:<9} loop {s['loop_seconds']:.1f} s, process {s['process_seconds']:.1f} s, "
              f"{s['tokens_per_second']:.0f} tok/s, MFU {s['mfu']:.2f} (peak {s['peak_gflops']:.1f} GFLOP/s), "
              f"dev loss {s['dev_loss']:.3f}, padded {s['padded_tokens']} of {s['tokens']} tokens")
    print(f"speed-up (loop) {summary['speedup_loop']:.2f}x, paired "
          f"{', '.join(f'{x:.2f}' for x in summary['paired_speedups_loop'])}; process {summary['speedup_process']:.2f}x")
    h.write(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
