"""adaptlab.models.embeddings: the bundled all-MiniLM-L6-v2 sentence embedder."""

from __future__ import annotations

import numpy as np
import pytest

from adaptlab.errors import ConfigError, ModelError
from adaptlab.models.embeddings import load_embedder
from adaptlab.models.info import list_models

TEXTS = [
    "The cat sat on the mat.",
    "A kitten is sitting on a rug.",
    "Stock markets fell sharply after the interest rate decision.",
    "Shares dropped when the central bank raised rates.",
    "How do I bake sourdough bread at home?",
    "ok",
    "This is a considerably longer sentence that goes on for a while, so that batches need padding "
    "and the attention mask has to exclude the padded positions from the mean.",
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_shape_dtype_and_unit_norm(embedder):
    vectors = embedder.encode(TEXTS)
    assert embedder.dim == 384
    assert vectors.shape == (len(TEXTS), embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dim)


def test_similar_sentences_are_closer(embedder):
    v = embedder.encode(TEXTS)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 4]
    assert sim[2, 3] > sim[2, 0] and sim[2, 3] > sim[2, 4]


def test_batching_and_order_do_not_change_vectors(embedder):
    reference = embedder.encode(TEXTS, batch_size=64)
    for batch_size in (1, 3):
        np.testing.assert_allclose(embedder.encode(TEXTS, batch_size=batch_size), reference, atol=1e-5)
    order = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = embedder.encode([TEXTS[i] for i in order], batch_size=2)
    np.testing.assert_allclose(shuffled, reference[order], atol=1e-5)


def test_matches_an_independent_mean_pooling(embedder):
    """Mean over unmasked tokens, then L2 normalisation, computed here by hand one text at a time."""
    import torch

    text = TEXTS[-1]
    enc = embedder.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = embedder.model(**enc).last_hidden_state[0].numpy()
    expected = hidden.mean(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(embedder.encode([text])[0], expected, atol=1e-5)


def test_param_count_listed(embedder):
    row = {r.name: r for r in list_models()}["minilm-l6"]
    assert row.params == sum(p.numel() for p in embedder.model.parameters())


def test_bad_inputs(embedder):
    with pytest.raises(TypeError):
        embedder.encode("a single string")
    with pytest.raises(ModelError) as info:
        load_embedder("minilm-l7")
    assert "did you mean 'minilm-l6'" in info.value.one_line()
    with pytest.raises(ConfigError) as info:
        load_embedder(device="gpu")
    assert info.value.field == "device"
