"""The training recipe's settings (`TrainSettings`), shared by every gradient-based method's options, and
`TrainArgs`: those settings plus the seed, as the recipe takes them."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from adaptlab.config import ConfigModel, Invalid


class TrainSettings(ConfigModel):
    """Settings shared by every gradient-based method (the training recipe)."""

    epochs: int = Field(3, ge=1)
    """Passes over the training set (ignored when ``max_steps`` is set; raised to reach ``min_steps``)."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides ``epochs`` and ``min_steps``)."""
    min_steps: int | None = Field(50, ge=1)
    """At least this many optimizer steps, epochs are raised to reach it: at n=16, batch 8, 3 epochs would be 6
    updates (None: epochs decide)."""
    batch_size: int = Field(8, ge=1)
    """Examples per micro-batch per process. Higher: faster, more memory."""
    grad_accum: int = Field(1, ge=1)
    """Micro-batches per optimizer step (effective batch = batch_size x grad_accum x processes)."""
    learning_rate: float | None = Field(None, gt=0)
    """Peak learning rate; None uses the method's default."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW decoupled weight decay."""
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    """Fraction of the optimizer steps spent warming the learning rate up linearly from 0."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warmup: linear to 0, cosine to 0, or constant."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Clip the global gradient norm (None: no clipping)."""
    max_length: int = Field(512, ge=8)
    """Tokens per training sequence; longer prompts are cut from the left so the answer survives."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, more tokens/second)."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the dev split every N optimizer steps (0: at the end of every epoch, at most ``max_evals``
    times)."""
    max_evals: int = Field(5, ge=1)
    """With ``eval_every: 0``, when more epochs than this are planned (``min_steps`` raised them), evaluate every
    ceil(steps / max_evals) steps instead of every epoch (and at the end): dev evaluations cost as much as a
    few steps each."""
    eval_metric: bool = True
    """Also score the dev split with the task metric (through the LM scoring path), not only dev loss."""
    eval_limit: int | None = Field(200, ge=1)
    """Dev examples used at each evaluation, dev loss and dev metric alike (a seeded sample; None: all)."""
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many evaluations without improvement (None: never stop early)."""
    keep_best: bool = True
    """Finish with the weights of the best evaluation instead of the last step."""
    select_on_dev: bool = True
    """Choose the checkpoint / stop early on dev labels (counted in labels_used). False: a fixed schedule, the last
    weights, no dev labels read."""
    save_every: int = Field(50, ge=0)
    """Write a resumable checkpoint every N optimizer steps (0: only at evaluations)."""
    keep_checkpoints: int = Field(1, ge=1)
    """How many resumable checkpoints to keep (the newest)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision through accelerate (bf16 works on CPU and recent GPUs; fp16 GPU only)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more compute."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu`` or ``cuda``; under ``accelerate launch`` accelerate decides."""
    progress: bool = True
    """Show a progress bar with loss and tokens/second (main process, terminals only)."""
    log_every: int = Field(10, ge=1)
    """Log the training loss every N optimizer steps."""
    oom_retries: int = Field(3, ge=0, le=16)
    """On GPU out-of-memory, halve the micro-batch (doubling accumulation: the same examples per optimizer
    step) and retry the step, at most this many times in a run (0: fail at once)."""

    def planned_epochs(self, groups_per_epoch: int) -> int:
        """Epochs to train when ``max_steps`` is unset: ``epochs``, raised to whole epochs reaching ``min_steps``
        (every example is then seen equally often)."""
        groups_per_epoch = max(groups_per_epoch, 1)
        if self.min_steps is None or self.epochs * groups_per_epoch >= self.min_steps:
            return self.epochs
        return math.ceil(self.min_steps / groups_per_epoch)

    def planned_steps(self, groups_per_epoch: int) -> int:
        """Optimizer steps of the run: ``max_steps``, else `planned_epochs` x ``groups_per_epoch``."""
        return self.max_steps or self.planned_epochs(groups_per_epoch) * max(groups_per_epoch, 1)

    def eval_interval(self, epochs_planned: int, total_steps: int) -> int:
        """Steps between dev evaluations (0: at each epoch's end): ``eval_every``, else every epoch while at most
        ``max_evals`` epochs are planned, else ceil(total_steps / max_evals)."""
        if self.eval_every or epochs_planned <= self.max_evals:
            return self.eval_every
        return math.ceil(total_steps / self.max_evals)

    def steps_per_epoch(self, n_train: int, processes: int = 1) -> int:
        """Optimizer steps in one pass over ``n_train`` examples (micro-batches of ``batch_size`` per process,
        ``grad_accum`` per step), as the recipe plans them in one process."""
        micro = math.ceil(max(n_train, 1) / (self.batch_size * max(processes, 1)))
        return math.ceil(micro / self.grad_accum)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise Invalid(f"unknown device {v!r}", hint="use auto, cpu or cuda")
        return v


class TrainArgs(TrainSettings):
    """`TrainSettings` plus the seed: what `adaptlab.strategies.finetune.recipe.Recipe` runs with."""

    seed: int = 0
    """Seeds python, numpy and torch, data order and adapter initialisation."""

    def settings(self) -> dict[str, object]:
        """The fields as a plain dict (what an artifact records as its training arguments)."""
        return self.model_dump(mode="json")
