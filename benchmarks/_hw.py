"""Shared benchmark helpers: the machine's matmul peak, model FLOPs utilisation (MFU) and peak memory.

MFU is achieved model FLOPs per second over the measured matmul peak of this machine at the same thread
count and dtype. Model FLOPs follow the usual convention: ``2 * N`` per token for a forward pass and
``6 * N`` per token for a training step, with ``N`` the non-embedding parameters (the embedding lookup
is not a matmul, and adaptlab runs the output layer only at the few positions it reads). Attention
score FLOPs (``~4 * layers * context * hidden`` per token, ~10% at 300-token contexts on SmolLM2-135M)
are not counted, so MFU slightly under-states the work done.

MFU in the benchmark scripts divides by :func:`shape_peak` at the model's own GEMM shapes, measured in the
script's own process and thread count; ``benchmarks/bench_peak.py`` records both peaks for this machine:

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_peak.py --threads 2
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any

DEFAULT_SIZES = {"float32": 2048, "bfloat16": 1024}
"""Square matrix size per dtype: bfloat16 GEMMs without avx512_bf16/AMX run ~10x slower, so smaller."""
SLOW_CALL_S = 2.0
"""An op whose warm-up call takes longer than this is timed once (emulated bfloat16 ``matmul``)."""


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_hardware() -> list[str]:
    """The bfloat16 matmul features this CPU has (``avx512_bf16``, ``amx_bf16``); empty: emulated."""
    return sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"})


def matmul_peak(dtype: str = "float32", *, size: int | None = None, repeats: int = 5,
                threads: int | None = None) -> dict[str, Any]:
    """Median GFLOP/s of the faster of ``torch.matmul(a, b)`` and ``F.linear(a, b)`` (``a @ b.T``, the op
    ``nn.Linear`` runs) on random ``size x size`` matrices, each after one warm-up call.

    Returns ``gflops`` (the peak: the faster op's median), ``op``, per-op medians in ``ops`` and the
    fastest single call in ``gflops_max``. ``threads`` sets ``torch.set_num_threads`` for the
    measurement and restores it afterwards. Two ops because they can take different kernels: on CPUs
    without bfloat16 hardware, bfloat16 ``linear`` is several times faster than bfloat16 ``matmul``.
    """
    import torch
    import torch.nn.functional as F

    size = size or DEFAULT_SIZES[dtype]
    flops = 2 * size**3
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    ops: dict[str, float] = {}
    best = 0.0
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
        b = torch.randn(size, size, generator=gen).to(getattr(torch, dtype))
        for name, fn in (("linear", F.linear), ("matmul", torch.matmul)):
            start = time.perf_counter()
            fn(a, b)
            n = 1 if time.perf_counter() - start > SLOW_CALL_S else repeats
            times = []
            for _ in range(n):
                start = time.perf_counter()
                fn(a, b)
                times.append(time.perf_counter() - start)
            ops[name] = flops / statistics.median(times) / 1e9
            best = max(best, flops / min(times) / 1e9)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old)
    op = max(ops, key=ops.__getitem__)
    return {"dtype": dtype, "size": size, "threads": used, "repeats": repeats, "op": op, "gflops": ops[op],
            "ops": ops, "gflops_max": best}


def linear_shapes(model: Any) -> list[tuple[int, int]]:
    """Distinct ``(in_features, out_features)`` of the model's ``nn.Linear`` layers, output layer excluded."""
    import torch

    out_layer = getattr(model, "get_output_embeddings", lambda: None)()
    shapes = {(m.in_features, m.out_features) for m in model.modules()
              if isinstance(m, torch.nn.Linear) and m is not out_layer}
    return sorted(shapes)


def shape_peak(shapes: list[tuple[int, int]], rows: int, *, repeats: int = 5, dtype: str = "float32",
               threads: int | None = None) -> dict[str, Any]:
    """This machine's peak GFLOP/s at the model's own GEMMs: ``F.linear`` of ``rows x in`` by ``out x in`` for
    each shape, median of ``repeats`` after a warm-up; the peak is the fastest shape's median.

    Measured in the benchmark's own process and thread count, next to the work it divides, so MFU is
    achieved model FLOP/s over what these matmuls reach here and now (never above 1 for a correct count).
    """
    import torch
    import torch.nn.functional as F

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    per_shape: dict[str, float] = {}
    try:
        gen = torch.Generator().manual_seed(0)
        for fan_in, fan_out in shapes:
            a = torch.randn(rows, fan_in, generator=gen).to(getattr(torch, dtype))
            w = torch.randn(fan_out, fan_in, generator=gen).to(getattr(torch, dtype))
            F.linear(a, w)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                F.linear(a, w)
                times.append(time.perf_counter() - start)
            per_shape[f"{rows}x{fan_in}x{fan_out}"] = 2 * rows * fan_in * fan_out / statistics.median(times) / 1e9
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old)
    best = max(per_shape, key=per_shape.__getitem__)
    return {"dtype": dtype, "rows": rows, "threads": used, "repeats": repeats, "gflops": per_shape[best],
            "shape": best, "per_shape": per_shape}


def non_embedding_params(model: Any) -> int:
    """Parameters of ``model`` outside its input/output embedding matrices (counted once if tied)."""
    skip = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            skip.add(id(module.weight))
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def mfu(flops: float, seconds: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation: ``flops / seconds`` over the peak (GFLOP/s), as a fraction."""
    return flops / seconds / (peak_gflops * 1e9) if seconds > 0 and peak_gflops > 0 else float("nan")


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MB of this process (or of its waited-for children, the largest one)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def thread_info() -> dict[str, Any]:
    """torch's intra-op threads, OMP_NUM_THREADS and the CPU count (for the record)."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
