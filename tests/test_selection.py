"""Demonstration selection: balanced counts, seeded random draws, nearest neighbours, ordering."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from adaptlab.errors import ConfigError
from adaptlab.strategies.prompt.format import Demo
from adaptlab.strategies.prompt.selection import KnnIndex, order_demos, select_balanced, select_random
from fakes import KeywordEmbedder

POOL = [Demo(f"d{i}", f"text {i}", lab) for i, lab in
        enumerate(["a"] * 10 + ["b"] * 4 + ["c"] * 6)]


@pytest.mark.parametrize("k", [3, 6, 9, 12])
def test_balanced_counts_and_alternation(k):
    chosen = select_balanced(POOL, k, seed=1, labels=["a", "b", "c"])
    counts = Counter(d.output for d in chosen)
    assert len(chosen) == k and len({d.id for d in chosen}) == k
    assert max(counts.values()) - min(counts.values()) <= 1
    assert [d.output for d in chosen[:3]] == ["a", "b", "c"]  # classes take turns
    assert all(chosen[i].output != chosen[i + 1].output for i in range(k - 1))


def test_balanced_runs_out_of_a_class():
    chosen = select_balanced(POOL, 14, seed=0, labels=["a", "b", "c"])
    counts = Counter(d.output for d in chosen)
    assert counts == {"b": 4, "c": 5, "a": 5}


def test_random_is_seeded():
    a = select_random(POOL, 5, seed=3)
    assert a == select_random(POOL, 5, seed=3)
    assert a != select_random(POOL, 5, seed=4)
    assert len({d.id for d in a}) == 5
    with pytest.raises(ConfigError):
        select_random(POOL, 21, seed=0)


def test_orders():
    demos = POOL[:3] + POOL[10:12] + POOL[14:15]
    assert order_demos(demos, "as_selected", seed=0) == demos
    assert order_demos(demos, "similar_last", seed=0) == demos[::-1]
    by = order_demos(demos, "by_label", seed=0, labels=["c", "b", "a"])
    assert [d.output for d in by] == ["c", "b", "b", "a", "a", "a"]
    shuffled = order_demos(demos, "random", seed=5)
    assert sorted(d.id for d in shuffled) == sorted(d.id for d in demos)
    assert shuffled == order_demos(demos, "random", seed=5)


def test_knn_picks_nearest_most_similar_first():
    pool = [Demo("1", "cat cat", "x"), Demo("2", "dog", "y"), Demo("3", "cat dog", "x"),
            Demo("4", "fish", "y")]
    emb = KeywordEmbedder(["cat", "dog", "fish"])
    index = KnnIndex.build(pool, emb)
    chosen = index.select(["cat", "fish fish", "dog"], emb, 2)
    assert [d.id for d in chosen[0]] == ["1", "3"]
    assert chosen[1][0].id == "4"
    assert [d.id for d in chosen[2]] == ["2", "3"]
    with pytest.raises(ConfigError):
        index.nearest(emb.encode(["cat"]), 5)


def test_knn_ties_break_by_pool_order():
    pool = [Demo(str(i), "same", "x") for i in range(5)]
    index = KnnIndex(pool, np.ones((5, 2), dtype=np.float32) / np.sqrt(2))
    assert index.nearest(np.ones((1, 2)) / np.sqrt(2), 3) == [[0, 1, 2]]


@pytest.mark.integration
def test_knn_with_real_minilm():
    from adaptlab.models.embeddings import load_embedder

    pool = [Demo("cat", "the cat sat on the mat", "pets"),
            Demo("stocks", "stock markets fell sharply on monday", "business"),
            Demo("match", "the team won the football match", "sports")]
    emb = load_embedder("minilm-l6")
    chosen = KnnIndex.build(pool, emb).select(["shares dropped on wall street",
                                               "a striker scored twice"], emb, 1)
    assert chosen[0][0].id == "stocks"
    assert chosen[1][0].id == "match"
