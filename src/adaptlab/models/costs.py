"""Cost arithmetic shared by strategies and the evaluator: FLOPs, parameters, peak memory, bytes on disk.

FLOPs use the standard dense-transformer approximation (Kaplan et al. 2020): a forward pass costs
about ``2 * N`` FLOPs per token for ``N`` parameters, a training step (forward + backward) about
``6 * N`` per token. Attention's context-length term is ignored (small for short prompts).

A compare cell's peak memory (`MemoryWindow`, `cell_peak`) counts only what the cell holds: the growth of the
process's resident memory (or of the CUDA allocator's, for a cell that measured its peak there) over the cell,
plus the in-memory size of the shared models it used that were already loaded when it started. The process's
own high-water mark, which also holds earlier cells' models, is kept beside it.
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

CELL_RSS = "cell_rss"
"""``peak_memory_kind`` of a cell's peak: RSS growth over the cell + resident bytes of the shared models it used."""
CELL_CUDA = "cell_cuda"
"""The same on the CUDA allocator: allocated-bytes growth over the cell + CUDA bytes of the shared models used."""
PROCESS_RSS = "rss"
"""The process's RSS high-water mark (where the peak cannot be reset, so no cell window exists)."""


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


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux) in bytes, None elsewhere."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _vm_hwm_bytes() -> int | None:
    """``VmHWM`` of /proc/self/status (Linux): the peak RSS since start or the last `reset_peak_rss`."""
    return _status_bytes("VmHWM")


def rss_bytes() -> int | None:
    """Resident memory of this process now (``VmRSS``, Linux); None where it cannot be read."""
    return _status_bytes("VmRSS")


def module_bytes(module: Any, device_type: str | None = None) -> int:
    """Bytes of a torch module's parameters and buffers (each tensor once), only those on ``device_type``
    (``cpu``, ``cuda``) when given; 0 for anything that is not a module."""
    if not (hasattr(module, "parameters") and hasattr(module, "buffers")):
        return 0
    seen: set[int] = set()
    total = 0
    for t in chain(module.parameters(), module.buffers()):
        if id(t) in seen or (device_type is not None and t.device.type != device_type):
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return int(total)


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
    torch = _cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since start or the last `reset_peak_rss` (includes loaded
    model weights)."""
    hwm = _vm_hwm_bytes()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cuda() -> Any:
    """The torch module when a CUDA device is in use in this process, else None."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch
    return None


@dataclass
class MemoryWindow:
    """A cell's memory window: `open` resets the peaks and notes what the process holds at the cell's start."""

    rss_start: int | None
    """Resident bytes at the start (None: unknown, or the peak could not be reset)."""
    cuda_start: int | None
    """CUDA bytes allocated at the start (None: no CUDA device in use)."""

    @classmethod
    def open(cls) -> MemoryWindow:
        """Start a window. Unreachable objects earlier work left are collected first, so that freeing them
        inside the window does not hide the cell's own growth."""
        gc.collect()
        reset = reset_peak_rss()
        torch = _cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        return cls(rss_start=rss_bytes() if reset else None,
                   cuda_start=int(torch.cuda.memory_allocated()) if torch is not None else None)

    def rss_growth(self) -> int | None:
        """Peak RSS since the start minus RSS at the start (None: not measurable here)."""
        return None if self.rss_start is None else max(0, peak_rss_bytes() - self.rss_start)

    def cuda_growth(self) -> int | None:
        """Peak CUDA bytes allocated since the start minus those allocated at the start."""
        torch = _cuda()
        if torch is None or self.cuda_start is None:
            return None
        return max(0, int(torch.cuda.max_memory_allocated()) - self.cuda_start)


def cell_peak(window: MemoryWindow, models_bytes: Callable[[str], int], *, cuda: bool = False) -> dict[str, Any]:
    """A cell's peak memory (module docstring) as train-cost keys: ``peak_memory_bytes``, ``peak_memory_kind``
    (`CELL_RSS`, `CELL_CUDA`; `PROCESS_RSS` where no window could be opened), ``models_held_bytes`` and
    ``peak_process_rss_bytes``. ``models_bytes(device_type)``: bytes of the already-loaded shared models the
    cell used on that device; ``cuda``: the cell measured its peak on the CUDA allocator."""
    process = peak_rss_bytes()
    kinds = ((CELL_CUDA, "cuda", window.cuda_growth()),) if cuda else ()
    for kind, device, growth in (*kinds, (CELL_RSS, "cpu", window.rss_growth())):
        if growth is not None:
            held = int(models_bytes(device))
            return {"peak_memory_bytes": growth + held, "peak_memory_kind": kind, "models_held_bytes": held,
                    "peak_process_rss_bytes": process}
    return {"peak_memory_bytes": process, "peak_memory_kind": PROCESS_RSS, "models_held_bytes": None,
            "peak_process_rss_bytes": process}
