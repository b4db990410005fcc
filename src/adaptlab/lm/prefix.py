"""Shared-prefix KV caching for `adaptlab.lm.hf.HFLM`: planning which prompt prefixes to compute once
(`plan_groups`), a cache layer that broadcasts a batch-1 prefix to every row of a forward pass, and the
keyword a model's forward takes its cache by (`cache_kwarg`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

GROUP_OVERHEAD_TOKENS = 64
"""Cost of one extra prefix group, in tokens, when deciding whether a longer group prefix pays."""


@functools.cache
def _shared_prefix_layer() -> type:
    """A single-use ``DynamicLayer`` holding a batch-1 prefix shared by every row of one forward pass.

    The prefix is broadcast (not copied per row) into the concatenation that attention needs, so memory
    grows with the suffixes, not batch x prefix. The new keys/values of the one forward are kept by
    reference in ``new_keys``/``new_values`` (to extend the prefix), never appended.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class SharedPrefixLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.keys, self.values = keys, values
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.new_keys: torch.Tensor | None = None
            self.new_values: torch.Tensor | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if self.new_keys is not None:
                raise RuntimeError("a shared-prefix cache serves one forward pass")
            self.new_keys, self.new_values = key_states, value_states
            b = key_states.shape[0]
            return (torch.cat([self.keys.expand(b, -1, -1, -1), key_states], dim=-2),
                    torch.cat([self.values.expand(b, -1, -1, -1), value_states], dim=-2))

        def get_seq_length(self) -> int:
            return self.keys.shape[-2]

    return SharedPrefixLayer


def prefix_cache_from(model: "PreTrainedModel", kv: list[tuple["torch.Tensor", "torch.Tensor"]]) -> Any:
    """A fresh ``DynamicCache`` whose layers start from the shared (batch-1) prefix ``kv``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    cache.layers = [_shared_prefix_layer()(k, v) for k, v in kv]
    return cache


def lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_groups(contexts: Sequence[Sequence[int]], *, overhead: int = GROUP_OVERHEAD_TOKENS,
                grouping: bool = True) -> tuple[int, list[tuple[int, list[int]]]]:
    """Split requests into prefix groups: ``(shared_len, [(group_prefix_len, request indices), ...])``.

    ``shared_len`` is the longest common prefix of all contexts; a group's prefix extends it and is
    computed once per group. Groups are contiguous runs of the lexicographically sorted contexts (nodes
    of their token trie); a tree DP picks the split that minimises tokens run plus ``overhead`` per group.
    Every prefix leaves at least one context token out, so each request keeps a suffix position to read.
    """
    n = len(contexts)
    order = sorted(range(n), key=lambda i: contexts[i])
    lens = [len(contexts[i]) for i in order]
    adj = [lcp(contexts[order[k]], contexts[order[k + 1]]) for k in range(n - 1)]

    def prefix(lo: int, hi: int) -> int:
        cap = min(lens[lo:hi]) - 1
        return cap if hi - lo == 1 else min(min(adj[lo:hi - 1]), cap)

    shared = prefix(0, n)
    if not grouping or n < 3:
        return shared, [(shared, list(range(n)))]

    def cost_one(lo: int, hi: int, p: int) -> int:
        return (p - shared) + sum(lens[lo:hi]) - (hi - lo) * p + overhead

    def best(lo: int, hi: int, depth: int) -> tuple[int, list[tuple[int, int, int]]]:
        p = prefix(lo, hi)
        one = (cost_one(lo, hi, p), [(p, lo, hi)])
        if hi - lo == 1 or depth > 64:
            return one
        low = min(adj[lo:hi - 1])
        cuts = [k + 1 for k in range(lo, hi - 1) if adj[k] == low]
        total, parts = 0, []
        for a, b in zip([lo] + cuts, cuts + [hi]):
            c, g = best(a, b, depth + 1)
            total, parts = total + c, parts + g
            if total >= one[0]:
                return one
        return total, parts

    _, parts = best(0, n, 0)
    return shared, [(p, [order[k] for k in range(lo, hi)]) for p, lo, hi in parts]


@functools.lru_cache(maxsize=64)
def cache_kwarg(forward: Callable[..., Any]) -> str:
    """The keyword ``forward`` takes the KV cache by: ``cache`` (transformers >= 5.24) or ``past_key_values``
    (earlier; 5.24 still accepts it with a deprecation warning)."""
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache of a model output (``cache`` from transformers 5.24, ``past_key_values`` before)."""
    return getattr(out, "cache", None) if hasattr(out, "cache") else getattr(out, "past_key_values", None)
