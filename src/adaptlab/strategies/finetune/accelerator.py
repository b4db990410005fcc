"""What the recipe asks of the machine: an `Accelerator` per run, peak memory, training FLOPs, and the progress
bar of a terminal run."""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

from adaptlab.models.costs import peak_rss_bytes
from adaptlab.strategies.finetune.train_args import TrainArgs

FLOPS_FORMULA = ("train FLOPs ~= tokens x (6N) for full fine-tuning, tokens x (4N + 6T) with a frozen base "
                 "(N = model parameters, T = trainable parameters; Kaplan et al. 2020, attention term ignored)")


def train_flops(tokens: int, n_params: int, trainable: int, full: bool) -> int:
    """Training FLOPs by `FLOPS_FORMULA`."""
    per_token = 6 * n_params if full else 4 * n_params + 6 * trainable
    return int(per_token * tokens)


def peak_memory_bytes(device: Any) -> int:
    """Peak GPU memory allocated on ``device`` (CUDA), else this process's peak RSS."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()


def new_accelerator(args: TrainArgs) -> Any:
    """An `Accelerator` for ``args``; in a single process a previous run's state is reset first."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed and PartialState._shared_state:
        # accelerate keeps process-wide state; several fits in one process may differ in precision.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    import torch

    # cpu=True also selects DDP over gloo when launched as several processes without GPUs
    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    return Accelerator(mixed_precision=args.mixed_precision, cpu=cpu)


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the underlying transformers model's forward takes ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


class TrainProgressBar:
    """A rich progress bar showing loss and tokens/second (a no-op when disabled or not a terminal)."""

    def __init__(self, total: int, start: int, *, enabled: bool) -> None:
        self.progress = None
        if not enabled or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task("train", total=total, completed=start, loss="-", tps="-")
        self.progress.start()

    def update(self, step: int, loss: float | None, tps: float | None) -> None:
        if self.progress is None:
            return
        fields = {} if loss is None else {"loss": f"{loss:.4f}", "tps": f"{tps:,.0f}"}
        self.progress.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
