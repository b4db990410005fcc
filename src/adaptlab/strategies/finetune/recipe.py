"""The training recipe: ``setup -> train -> save -> cleanup`` on `accelerate`, no callback maze.

`Recipe.run()` trains a causal LM whose trainable parameters are already marked (LoRA, IA3, prompt
tuning, or everything) on encoded (context, answer) pairs with an answer-only loss:

* accelerate handles device placement, mixed precision (``bf16``/``fp16`` autocast) and multiple
  processes (DDP; launched with ``accelerate launch``). Batches are planned by
  `LengthGroupedBatches` and split across processes by this recipe (no padding to a global maximum).
* AdamW, warmup + linear/cosine decay, gradient accumulation (``no_sync`` on inner micro-batches),
  gradient clipping; the loss of an optimizer step is the mean over its answer tokens.
* Schedule: ``max_steps`` optimizer steps, else ``epochs`` passes raised to whole epochs reaching
  ``min_steps`` (`TrainSettings.planned_epochs`: a small training set still gets enough updates).
* Dev evaluation every ``eval_every`` steps (or each epoch): dev loss and, when a scorer is given,
  the task metric through the same LM scoring path as prompting. Early stopping and keeping the best
  weights follow the dev metric (dev loss when there is no scorer). With ``select_on_dev: false`` there
  is no dev evaluation at all: the fixed schedule runs to its end and the last weights are kept.
* Resumable checkpoints every ``save_every`` steps (`adaptlab.strategies.finetune.checkpoint`).
* GPU out-of-memory in a step halves the micro-batch and retries that step (`run_with_memory_backoff`):
  the optimizer step sees the same examples with the same loss weights, so the run goes on unchanged.

Cost accounting (FLOPs, Kaplan et al. 2020 approximation, attention's context term ignored), with
``N`` the model's parameters, ``T`` the trainable ones and tokens counted without padding (prompt
tuning's virtual tokens included):

* full fine-tuning: ``6 N`` FLOPs per token (forward 2N, backward 4N);
* frozen base (LoRA, IA3, prompt tuning): ``4 N + 6 T`` per token -- forward 2N, backward through
  the activations 2N, no weight gradients for the frozen base, plus forward + backward of the
  trainable parameters 6T.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import ConfigError
from adaptlab.strategies.finetune.batching import IGNORE_INDEX, Encoded, LengthGroupedBatches, answer_window, collate
from adaptlab.strategies.finetune.checkpoint import (latest_checkpoint, load_checkpoint, load_trainable,
                                            read_trainable, save_checkpoint, save_trainable)
from adaptlab.strategies.finetune.accelerator import (FLOPS_FORMULA, TrainProgressBar, accepts_logits_to_keep,
                                                      new_accelerator, peak_memory_bytes, train_flops)
from adaptlab.strategies.finetune.memory import run_with_memory_backoff
from adaptlab.strategies.finetune.train_args import TrainArgs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


DevScorer = Callable[["torch.nn.Module"], float]
"""Scores a model on the dev split with the task metric (higher is better)."""

@dataclass
class TrainState:
    """Everything that changes during training; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    group: int = 0
    """Next group (of ``grad_accum`` micro-batches) to run in ``epoch``."""
    tokens: int = 0
    padded_tokens: int = 0
    step_seconds: float = 0.0
    """Time spent in forward/backward/optimizer steps (throughput denominator)."""
    seconds: float = 0.0
    """Wall time of the whole fit: steps, evaluation and checkpoints (accumulated across resumes)."""
    eval_tokens: int = 0
    best_score: list[float] | None = None
    """(dev metric, -dev loss) of the best evaluation, compared lexicographically."""
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    resumed_from: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    micro_batch_size: int | None = None
    """Set once out-of-memory has shrunk the micro-batch below ``batch_size`` (kept on resume)."""
    oom_halvings: int = 0


@dataclass
class TrainResult:
    """What a finished run reports (the model itself stays with the caller)."""

    state: TrainState
    cost: dict[str, Any]
    final_dev: dict[str, Any]


@dataclass
class RecipeSetup:
    """What a training run needs besides the model, its data and `TrainArgs`."""

    lr: float
    """Peak learning rate (the option, or the method's default)."""
    pad_id: int
    work_dir: Path
    """Checkpoints go to ``work_dir/checkpoints``, the best weights to ``work_dir/best``."""
    full: bool = False
    """Every weight trains (FLOPs formula and memory)."""
    dev_scorer: DevScorer | None = None
    resume: bool = False
    extra_tokens_per_example: int = 0
    """Tokens the model runs per example beyond the encoded ones (prompt tuning's virtual tokens)."""
    n_params: int | None = None
    windowed_loss: bool = True
    """Left padding + output layer on the answer positions only (not for prompt tuning)."""


class Recipe:
    """One training run. ``run()`` = `setup` -> `train` -> `save` -> `cleanup`."""

    def __init__(self, model: "torch.nn.Module", train: Sequence[Encoded], dev: Sequence[Encoded], *,
                 args: TrainArgs, setup: RecipeSetup) -> None:
        self.model = model
        self.train_data = list(train)
        self.dev_data = list(dev)
        self.args = args
        self.lr = setup.lr
        self.pad_id = setup.pad_id
        self.work_dir = Path(setup.work_dir)
        self.full = setup.full
        self.dev_scorer = setup.dev_scorer
        self.resume = setup.resume
        self.extra_tokens = setup.extra_tokens_per_example
        self.n_params = setup.n_params
        self.state = TrainState()
        self.windowed = setup.windowed_loss and accepts_logits_to_keep(model)
        """Left padding + output layer on the answer positions only (not for prompt tuning: peft
        prepends virtual tokens inside forward, so positions are its business)."""

    # ------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Accelerator, seed, optimizer, schedule, batch plan; restore a checkpoint if resuming."""
        import torch
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        args = self.args
        self.accelerator = acc = new_accelerator(args)
        set_seed(args.seed)
        if args.gradient_checkpointing:
            enable = getattr(self.model, "activation_checkpointing_enable", None)  # transformers >= 5 name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = False
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("the model has no trainable parameters")
        self.trainable = sum(p.numel() for p in params)
        self.n_params = self.n_params or sum(p.numel() for p in self.model.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=args.weight_decay)
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        self.batches = LengthGroupedBatches([len(e) for e in self.train_data], args.batch_size,
                                            seed=args.seed, group_by_length=args.group_by_length,
                                            num_processes=acc.num_processes, process_index=acc.process_index)
        self.groups_per_epoch = math.ceil(len(self.batches) / args.grad_accum)
        self.epochs_planned = args.planned_epochs(self.groups_per_epoch)
        self.total_steps = args.planned_steps(self.groups_per_epoch)
        self.eval_interval = args.eval_interval(self.epochs_planned, self.total_steps)
        if args.max_steps is None and self.epochs_planned != args.epochs:
            log.info("%d epochs of %d steps are fewer than min_steps=%s: training %d epochs (%d steps)",
                     args.epochs, self.groups_per_epoch, args.min_steps, self.epochs_planned, self.total_steps)
        name = {"constant": "constant_with_warmup"}.get(args.schedule, args.schedule)
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=round(args.warmup_ratio *
                                       self.total_steps), num_training_steps=self.total_steps)
        self.ckpt_root = self.work_dir / "checkpoints"
        self.best_path = self.work_dir / "best" / "trainable.safetensors"
        ckpt = latest_checkpoint(self.ckpt_root) if self.resume else None
        if ckpt is not None:
            self._check_plan(ckpt)
            saved = load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer,
                                    scheduler=self.scheduler, accelerator=acc)
            saved.pop("num_processes", None)
            saved.pop("plan", None)
            self.state = TrainState(**saved)
            self.state.resumed_from.append(self.state.step)
            log.info("resumed from %s (step %d of %d)", ckpt, self.state.step, self.total_steps)
        elif self.resume:
            log.info("resume requested but no checkpoint in %s: starting fresh", self.ckpt_root)
        log.info("training %d of %d parameters for %d steps on %d process(es), %s",
                 self.trainable, self.n_params, self.total_steps, acc.num_processes, acc.device)

    def _check_plan(self, ckpt: Path) -> None:
        """ConfigError when the checkpoint was written with other data-order/schedule settings."""
        plan = json.loads((ckpt / "state.json").read_text(encoding="utf-8")).get("plan")
        now = self._plan_signature()
        changed = sorted(k for k in (plan or {}) if plan[k] != now.get(k))
        if changed:
            raise ConfigError(f"cannot resume {ckpt}: the run's settings changed ({', '.join(changed)})",
                              field=changed[0], hint="resume with the original settings, or use a new output folder")

    def _plan_signature(self) -> dict[str, Any]:
        """Settings a resumed run must share with the checkpointed one (data order, steps, schedule)."""
        a = self.args
        return {"seed": a.seed, "batch_size": a.batch_size, "grad_accum": a.grad_accum, "group_by_length":
                a.group_by_length, "total_steps": self.total_steps, "learning_rate": self.lr,
                "schedule": a.schedule, "n_train": len(self.train_data)}

    # ------------------------------------------------------------------------------------- train
    def _groups(self, epoch: int) -> list[list[list[int]]]:
        if getattr(self, "_plan_epoch", None) != epoch:
            batches = self.batches.epoch(epoch)
            k = self.args.grad_accum
            self._plan = [batches[i:i + k] for i in range(0, len(batches), k)]
            self._plan_epoch = epoch
        return self._plan

    def _loss(self, model: Any, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """Mean cross-entropy over the answer tokens of one micro-batch."""
        import torch.nn.functional as F

        if not self.windowed:
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
        k = answer_window(batch["labels"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], logits_to_keep=k + 1).logits
        targets = batch["labels"][:, -k:]
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    def _collate(self, indices: Sequence[int], data: Sequence[Encoded]) -> dict[str, "torch.Tensor"]:
        batch = collate([data[i] for i in indices], self.pad_id, left=self.windowed)
        if not self.windowed:
            batch.pop("position_ids")
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def _step(self, group: list[list[int]]) -> tuple[float, int, int]:
        """One optimizer step over a group of micro-batches; returns (loss, tokens, padded tokens).

        Single process: out of memory retries the step with smaller micro-batches (same examples)."""
        st, args = self.state, self.args
        size = st.micro_batch_size or args.batch_size
        if self.accelerator.num_processes > 1:  # one rank retrying alone would desynchronise DDP
            return self._step_at(group, size)
        result, used = run_with_memory_backoff(lambda s: self._step_at(group, s), size,
                                               max_halvings=args.oom_retries - st.oom_halvings,
                                               on_oom=self._free_after_oom)
        if used != size:
            st.micro_batch_size = used
        return result

    def _free_after_oom(self, old: int, new: int) -> None:
        """Drop the failed attempt's gradients and cached blocks before retrying smaller."""
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        self.state.oom_halvings += 1
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _step_at(self, group: list[list[int]], micro: int) -> tuple[float, int, int]:
        """`_step` with every micro-batch of the group cut into pieces of at most ``micro`` examples."""
        acc, model = self.accelerator, self.model
        pieces = [b[i:i + micro] for b in group for i in range(0, len(b), micro)]
        batches = [self._collate(b, self.train_data) for b in pieces]
        n_target = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
        total = max(sum(n_target), 1)
        loss_sum = 0.0
        tokens = padded = 0
        for j, batch in enumerate(batches):
            last = j == len(batches) - 1
            ctx = acc.no_sync(model) if not last and acc.num_processes > 1 else contextlib.nullcontext()
            with ctx, acc.autocast():
                loss = self._loss(model, batch) * (n_target[j] / total)
                acc.backward(loss)
            loss_sum += float(loss.detach())
            n_seq = batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum()) + self.extra_tokens * n_seq
            padded += batch["input_ids"].numel() + self.extra_tokens * n_seq
        if self.args.max_grad_norm is not None:
            acc.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, tokens, padded

    def train(self) -> TrainState:
        """The loop: steps, periodic logging, evaluation, early stopping and checkpoints."""
        import torch

        args, acc, st = self.args, self.accelerator, self.state
        bar = TrainProgressBar(self.total_steps, st.step, enabled=args.progress and acc.is_main_process)
        start = time.perf_counter()
        seconds_before = st.seconds
        window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
        self.model.train()
        while st.step < self.total_steps and not st.stopped_early:
            groups = self._groups(st.epoch)
            t0 = time.perf_counter()
            loss, tokens, padded = self._step(groups[st.group])
            dt = time.perf_counter() - t0
            st.step += 1
            st.group += 1
            if st.group >= len(groups):
                st.epoch, st.group = st.epoch + 1, 0
                epoch_end = True
            else:
                epoch_end = False
            st.step_seconds += dt
            window_loss, window_steps = window_loss + loss, window_steps + 1
            if acc.num_processes > 1:  # token counts of all processes
                counts = acc.reduce(torch.tensor([tokens, padded], device=acc.device), reduction="sum")
                tokens, padded = (int(x) for x in counts.tolist())
            window_tokens, window_time = window_tokens + tokens, window_time + dt
            st.tokens += tokens
            st.padded_tokens += padded
            done = st.step >= self.total_steps
            if st.step % args.log_every == 0 or done:
                stats = torch.tensor([window_loss / window_steps, window_time], device=acc.device)
                mean_loss, window_time = acc.reduce(stats, reduction="mean").tolist()
                tps = window_tokens / max(window_time, 1e-9)
                lr = self.scheduler.get_last_lr()[0]
                st.history.append({"step": st.step, "epoch": st.epoch, "loss": mean_loss, "lr": lr,
                                   "tokens_per_second": tps})
                bar.update(st.step, mean_loss, tps)
                if acc.is_main_process:
                    log.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", st.step, self.total_steps, mean_loss, lr, tps)
                window_loss, window_steps, window_tokens, window_time = 0.0, 0, 0, 0.0
            else:
                bar.update(st.step, None, None)
            boundary = (self.eval_interval and st.step % self.eval_interval == 0) or \
                (not self.eval_interval and epoch_end) or done
            evaluate = boundary and args.select_on_dev  # select_on_dev false: no dev example is read
            if evaluate:
                self._evaluate_and_select()
                self.model.train()
            st.seconds = seconds_before + time.perf_counter() - start
            periodic = args.save_every and st.step % args.save_every == 0
            if not done and not st.stopped_early and (periodic or boundary):
                save_checkpoint(self.ckpt_root, st.step, model=self.model, optimizer=self.optimizer,
                                scheduler=self.scheduler, state={**asdict(st), "plan": self._plan_signature()},
                                accelerator=acc,
                                keep=args.keep_checkpoints)
        bar.close()
        if args.keep_best and st.best_step is not None and st.best_step != st.step and self.best_path.is_file():
            log.info("restoring the best weights (step %d)", st.best_step)
            load_trainable(acc.unwrap_model(self.model), read_trainable(self.best_path))
        st.seconds = seconds_before + time.perf_counter() - start
        return st

    # ------------------------------------------------------------------------------------- eval
    def dev_loss(self) -> float | None:
        """Mean answer-token loss on the dev split (sharded over processes)."""
        import torch

        if not self.dev_data:
            return None
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        order = sorted(range(len(self.dev_data)), key=lambda i: len(self.dev_data[i]))
        bs = self.state.micro_batch_size or self.args.batch_size
        batches = [order[i:i + bs] for i in range(0, len(order), bs)][acc.process_index::acc.num_processes]
        total = torch.zeros(2, device=acc.device, dtype=torch.float64)
        model.eval()
        with torch.no_grad():
            for b in batches:
                batch = self._collate(b, self.dev_data)
                with acc.autocast():
                    loss = self._loss(model, batch)
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                total += torch.tensor([float(loss) * n, n], device=acc.device, dtype=torch.float64)
                self.state.eval_tokens += int(batch["attention_mask"].sum())
        total = acc.reduce(total, reduction="sum")
        return float(total[0] / max(float(total[1]), 1.0))

    def _evaluate_and_select(self) -> dict[str, Any]:
        """Dev loss (+ dev metric); the best is the highest metric, ties broken by the lower loss."""
        st, acc = self.state, self.accelerator
        record: dict[str, Any] = {"step": st.step, "epoch": st.epoch, "dev_loss": self.dev_loss()}
        if self.dev_scorer is not None:
            model = acc.unwrap_model(self.model)
            model.eval()
            record["dev_metric"] = float(self.dev_scorer(model))
        st.history.append({"eval": True, **record})
        if acc.is_main_process:
            log.info("eval %s", json.dumps(record))
        if record["dev_loss"] is None and "dev_metric" not in record:
            return record
        loss = record["dev_loss"] if record["dev_loss"] is not None else 0.0
        score = [record.get("dev_metric", 0.0), -loss]
        if st.best_score is None or _better(score, st.best_score):
            st.best_score, st.best_step, st.bad_evals = score, st.step, 0
            if self.args.keep_best:
                self._save_best()
        else:
            st.bad_evals += 1
            patience = self.args.early_stopping_patience
            if patience is not None and st.bad_evals >= patience:
                log.info("early stopping at step %d (best step %s)", st.step, st.best_step)
                st.stopped_early = True
        return record

    def _save_best(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            self.best_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.best_path.with_suffix(".tmp")
            save_trainable(acc.unwrap_model(self.model), tmp)
            os.replace(tmp, self.best_path)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------------------------- save/cleanup
    def save(self) -> TrainResult:
        """Final dev record and the cost summary (the artifact itself is written by the caller)."""
        st = self.state
        evals = [h for h in st.history if h.get("eval")]
        final = next((h for h in reversed(evals) if h["step"] == st.best_step), evals[-1] if evals else {})
        device = self.accelerator.device
        cost = {
            "seconds": st.seconds,
            "step_seconds": st.step_seconds,
            "steps": st.step,
            "total_steps": self.total_steps,
            "epochs_planned": self.epochs_planned if self.args.max_steps is None else None,
            "epochs_completed": st.epoch,
            "tokens": st.tokens,
            "padded_tokens": st.padded_tokens,
            "tokens_per_second": st.tokens / st.step_seconds if st.step_seconds else None,
            "flops": train_flops(st.tokens, int(self.n_params or 0), self.trainable, self.full),
            "eval_flops": 2 * int(self.n_params or 0) * st.eval_tokens,
            "flops_formula": FLOPS_FORMULA,
            "peak_memory_bytes": peak_memory_bytes(device),
            "peak_memory_kind": "cuda_max_allocated" if getattr(device, "type", "") == "cuda" else "rss",
            "trainable_params": self.trainable,
            "total_params": int(self.n_params or 0),
            "num_processes": self.accelerator.num_processes,
            "mixed_precision": self.args.mixed_precision,
            "stopped_early": st.stopped_early,
            "best_step": st.best_step,
            "resumed_from": st.resumed_from,
            "micro_batch_size": st.micro_batch_size or self.args.batch_size,
            "oom_halvings": st.oom_halvings,
        }
        return TrainResult(state=st, cost=cost, final_dev=final)

    def cleanup(self) -> "torch.nn.Module":
        """Unwrap the model (DDP, autocast hooks), back to eval mode with the KV cache on."""
        acc = self.accelerator
        model = acc.unwrap_model(self.model, keep_fp32_wrapper=False)
        if self.args.gradient_checkpointing:
            disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
            disable()
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = True
        model.eval()
        acc.wait_for_everyone()
        self.model = model
        return model

    def run(self) -> TrainResult:
        self.setup()
        self.train()
        result = self.save()
        self.cleanup()
        return result


def _better(a: Sequence[float], b: Sequence[float], eps: float = 1e-9) -> bool:
    """Lexicographic "a beats b" with a tolerance for float noise."""
    for x, y in zip(a, b):
        if x > y + eps:
            return True
        if x < y - eps:
            return False
    return False
