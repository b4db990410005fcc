"""Out-of-memory policy for training: halve the micro-batch, keep the optimizer step's examples, retry.

`Recipe._step` runs each optimizer step through `run_with_memory_backoff`. A step is a fixed group of
examples whose micro-batch losses are weighted by their answer tokens, so cutting every micro-batch in
halves (twice the gradient accumulation) computes the same update with less memory; the run then keeps
the smaller micro-batch. Multi-process (DDP) runs do not retry: one rank retrying alone would leave the
others waiting in the gradient all-reduce.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from adaptlab.errors import ResourceError

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (``torch.cuda.OutOfMemoryError``, or a
    RuntimeError saying "out of memory" as older torch versions and other backends raise)."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def run_with_memory_backoff(step: Callable[[int], T], batch_size: int, *, max_halvings: int,
                            on_oom: Callable[[int, int], None] | None = None) -> tuple[T, int]:
    """``step(micro_batch_size)``; on out-of-memory, halve the micro-batch (rounding up) and retry.

    Halving the micro-batch while the caller keeps the examples of the optimizer step fixed doubles
    the gradient accumulation: the effective batch is unchanged. ``on_oom(old, new)`` runs between
    attempts (free memory, log), after the failed attempt's frames are released. At most
    ``max_halvings`` retries; out of memory at micro-batch 1 or beyond that raises `ResourceError`.
    Other exceptions propagate at once. Returns (result, micro-batch size that fitted).
    """
    size, halvings = batch_size, 0
    while True:
        try:
            return step(size), size
        except Exception as exc:  # only out-of-memory is handled; anything else is re-raised as is
            if not is_out_of_memory(exc):
                raise
            if size <= 1 or halvings >= max_halvings:
                raise ResourceError(
                    f"out of accelerator memory with micro-batches of {size} example(s) after {halvings} "
                    f"halving(s)", field="batch_size",
                    hint="lower max_length, set gradient_checkpointing=true or mixed_precision=bf16, "
                         "or use lora") from exc
            message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        new = (size + 1) // 2
        halvings += 1
        log.warning("out of memory with micro-batches of %d (%s): retrying the step with micro-batches "
                    "of %d, i.e. %dx the gradient accumulation (same effective batch)", size, message,
                    new, 2 ** halvings)
        if on_oom is not None:
            on_oom(size, new)
        size = new
