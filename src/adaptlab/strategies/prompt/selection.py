"""Demonstration selection (random, class-balanced, kNN by sentence embedding) and ordering.

All functions are pure given their ``seed``; they operate on `Demo` objects (rendered input text +
output). kNN similarity is the cosine of L2-normalised embeddings (a dot product).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np

from adaptlab.errors import ConfigError
from adaptlab.strategies.prompt.format import Demo

Selection = Literal["random", "balanced", "knn"]
Order = Literal["as_selected", "random", "by_label", "similar_last"]
SELECTIONS: tuple[str, ...] = ("random", "balanced", "knn")
ORDERS: tuple[str, ...] = ("as_selected", "random", "by_label", "similar_last")


class Embedder(Protocol):
    """What kNN selection needs (`adaptlab.models.embeddings.Embedder` provides it)."""

    name: str

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...


def select_random(pool: Sequence[Demo], k: int, *, seed: int) -> list[Demo]:
    """``k`` demonstrations drawn uniformly without replacement (in draw order)."""
    if k > len(pool):
        raise ConfigError(f"k={k} demonstrations but only {len(pool)} training examples", field="k")
    return random.Random(seed).sample(list(pool), k)


def select_balanced(pool: Sequence[Demo], k: int, *, seed: int,
                    labels: Sequence[str] | None = None) -> list[Demo]:
    """``k`` demonstrations with class counts differing by at most one, classes alternating.

    Classes take turns in ``labels`` order (round-robin); within a class the examples are a seeded
    shuffle. When ``k`` is not a multiple of the class count the first classes get one more; with ``k`` below the
    class count the last classes are not shown (`balanced_shortfall` words the warning fits give).
    """
    if k > len(pool):
        raise ConfigError(f"k={k} demonstrations but only {len(pool)} training examples", field="k")
    rng = random.Random(seed)
    by_label: dict[str, list[Demo]] = {}
    for d in pool:
        by_label.setdefault(d.output, []).append(d)
    order = [lab for lab in (labels or sorted(by_label)) if by_label.get(lab)]
    for lab in order:
        rng.shuffle(by_label[lab])
    chosen: list[Demo] = []
    cursor = {lab: 0 for lab in order}
    while len(chosen) < k:
        progressed = False
        for lab in order:
            if len(chosen) == k:
                break
            if cursor[lab] < len(by_label[lab]):
                chosen.append(by_label[lab][cursor[lab]])
                cursor[lab] += 1
                progressed = True
        if not progressed:
            break
    return chosen


def balanced_shortfall(k: int, n_classes: int) -> str | None:
    """A warning when ``k`` balanced demonstrations cannot show every one of ``n_classes`` classes, else None."""
    if 0 < k < n_classes:
        return f"k={k} balanced shows only {k} of {n_classes} classes; use k >= {n_classes}"
    return None


def order_demos(demos: Sequence[Demo], order: str, *, seed: int,
                labels: Sequence[str] | None = None) -> list[Demo]:
    """Reorder selected demonstrations.

    ``as_selected`` keeps the selection order (kNN: most similar first); ``random`` shuffles with
    ``seed``; ``by_label`` groups by class in ``labels`` order (stable); ``similar_last`` reverses the
    kNN order so the most similar demonstration sits right before the query.
    """
    demos = list(demos)
    if order == "as_selected":
        return demos
    if order == "random":
        random.Random(seed).shuffle(demos)
        return demos
    if order == "by_label":
        rank = {lab: i for i, lab in enumerate(labels or sorted({d.output for d in demos}))}
        return sorted(demos, key=lambda d: rank.get(d.output, len(rank)))
    if order == "similar_last":
        return demos[::-1]
    raise ConfigError(f"unknown order {order!r}", field="order", hint="one of " + ", ".join(ORDERS))


class KnnIndex:
    """Nearest training examples by embedding similarity.

    ``embeddings`` are the L2-normalised embeddings of ``pool``'s input texts (row i = pool[i]).
    """

    def __init__(self, pool: Sequence[Demo], embeddings: np.ndarray) -> None:
        if len(pool) != len(embeddings):
            raise ValueError(f"{len(pool)} pool examples but {len(embeddings)} embeddings")
        self.pool = list(pool)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)

    @classmethod
    def build(cls, pool: Sequence[Demo], embedder: Embedder, *, batch_size: int = 64) -> "KnnIndex":
        return cls(pool, embedder.encode([d.input for d in pool], batch_size=batch_size))

    def nearest(self, query_embeddings: np.ndarray, k: int) -> list[list[int]]:
        """For each query row, the pool indices of the ``k`` most similar, most similar first.

        Ties break by pool index (stable), so results are deterministic.
        """
        if k > len(self.pool):
            raise ConfigError(f"k={k} demonstrations but the kNN pool has {len(self.pool)}",
                              field="k")
        if k == 0:
            return [[] for _ in range(len(query_embeddings))]
        sims = np.asarray(query_embeddings, dtype=np.float32) @ self.embeddings.T
        out: list[list[int]] = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            out.append(sorted(top.tolist(), key=lambda i: (-float(row[i]), i)))
        return out

    def select(self, queries: Sequence[str], embedder: Embedder, k: int) -> list[list[Demo]]:
        """The ``k`` nearest demonstrations of each query text, most similar first."""
        if not queries:
            return []
        idx = self.nearest(embedder.encode(list(queries)), k)
        return [[self.pool[i] for i in row] for row in idx]
