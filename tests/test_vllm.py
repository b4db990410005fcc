"""The vLLM backend: score bookkeeping and tokenisation here; the engine itself where a GPU is."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from adaptlab.errors import ModelError
from adaptlab.lm.base import LoglikelihoodRequest
from adaptlab.lm.vllm import VLLMLM, continuation_logprob, vllm_unavailable_reason


def test_continuation_logprob_sums_the_scored_positions() -> None:
    ids = [5, 7, 9, 11]
    plp = [None, {7: SimpleNamespace(logprob=-1.0)}, {9: SimpleNamespace(logprob=-0.5), 3: -9.0}, {11: -0.25}]
    assert continuation_logprob(plp, ids, 2) == pytest.approx(-0.75)
    assert continuation_logprob(plp, ids, 1) == pytest.approx(-1.75)
    with pytest.raises(ModelError):
        continuation_logprob([None, {}, None, None], ids, 1)
    with pytest.raises(ValueError):
        continuation_logprob(plp, ids, 0)


def test_sequences_match_hflm_tokenisation(tiny_loaded) -> None:
    """vLLM scores the same token sequences HFLM does (context + moved whitespace + continuation)."""
    from adaptlab.lm.hf import HFLM

    class _Engine:  # only the tokenizer is used when building sequences
        def get_tokenizer(self):
            return tiny_loaded.tokenizer

    lm = VLLMLM("tiny", engine=_Engine(), max_length=64)
    hf = HFLM(tiny_loaded.model, tiny_loaded.tokenizer, max_length=64)
    reqs = [LoglikelihoodRequest("Review: great film\nAnswer: ", ("positive", "negative")),
            LoglikelihoodRequest("word " * 100, (" yes",))]
    contexts, conts = hf._prepare(reqs)
    seqs = lm._sequences(reqs)
    assert [(i, j) for i, j, *_ in seqs] == [(0, 0), (0, 1), (1, 0)]
    k = 0
    for i, (ctx, cs) in enumerate(zip(contexts, conts)):
        for c in cs:
            _, _, ids, start, _ = seqs[k]
            assert ids[start:] == c
            assert ids[:start] == ctx[-(64 - len(c)):]
            assert len(ids) <= 64
            k += 1


@pytest.mark.skipif(vllm_unavailable_reason() is not None, reason=f"vllm backend: {vllm_unavailable_reason()}")
def test_vllm_scores_agree_with_hflm(default_loaded) -> None:  # pragma: no cover - needs a CUDA GPU + vllm
    from adaptlab.lm.factory import build_lm
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import ModelSpec

    reqs = [LoglikelihoodRequest(f"Review: {t}\nSentiment:", (" positive", " negative"))
            for t in ("a moving, funny film", "dull and far too long", "i loved every minute")]
    v = build_lm(ModelSpec(name="smollm2-135m-instruct", backend="vllm", dtype="float32"))
    hf = HFLM.from_loaded(default_loaded)
    for a, b in zip(v.loglikelihood(reqs), hf.loglikelihood(reqs)):
        assert a.logprobs == pytest.approx(b.logprobs, abs=0.05)
    assert v.generate(["The capital of France is"], max_new_tokens=3)[0].strip()
