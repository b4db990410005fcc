"""Cost arithmetic shared by strategies and the evaluator: FLOPs, parameters, peak memory, bytes on disk.

FLOPs use the standard dense-transformer approximation (Kaplan et al. 2020): a forward pass costs
about ``2 * N`` FLOPs per token for ``N`` parameters, a training step (forward + backward) about
``6 * N`` per token. Attention's context-length term is ignored (small for short prompts).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any


def forward_flops(n_params: int, tokens: int | float) -> int:
    """Approximate FLOPs of running ``tokens`` tokens forward through ``n_params`` parameters: 2·N·T."""
    return int(2 * int(n_params) * tokens)


def train_flops(n_params: int, tokens: int | float) -> int:
    """Approximate FLOPs of training (forward + backward) on ``tokens`` tokens: 6·N·T."""
    return int(6 * int(n_params) * tokens)


def count_params(module: Any) -> int:
    """Parameters of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_bytes() -> int | None:
    """``VmHWM`` of /proc/self/status (Linux): the peak RSS since start or the last `reset_peak_rss`."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Start a new peak-memory window: later `peak_rss_bytes` calls report the peak since now (memory
    already resident, such as a loaded model, counts). Linux only (writes 5 to /proc/self/clear_refs);
    returns False where the peak cannot be reset, and the peak then stays the process's."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def reset_peak_memory() -> None:
    """`reset_peak_rss`, and the CUDA allocator's peak when torch is loaded and a GPU is in use."""
    reset_peak_rss()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since start or the last `reset_peak_rss` (includes loaded
    model weights)."""
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
