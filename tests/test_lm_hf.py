"""HFLM: the shared-prefix cached scoring path must agree with scoring every sequence on its own."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlab.lm.base import LM, LoglikelihoodRequest
from adaptlab.lm.hf import HFLM
from adaptlab.lm.prefix import plan_groups

TOL = 1e-4
INSTRUCTION = "Classify the sentiment of each movie review.\n\n"
REVIEWS = ["a gripping, beautifully shot film", "dull and far too long", "i laughed, i cried",
           "the plot makes no sense at all", "a modest but charming comedy", "what a waste of a good cast",
           "stunning performances all round", "boring", "an instant classic that will be remembered",
           "it falls apart in the final act"]
LABELS = (" negative", " positive")


def demo(i: int) -> str:
    return f"Review: {REVIEWS[i]}\nSentiment:{LABELS[i % 2]}\n\n"


def few_shot(query: str, demos: list[int]) -> str:
    return INSTRUCTION + "".join(demo(i) for i in demos) + f"Review: {query}\nSentiment:"


@pytest.fixture(scope="module")
def sharp(tiny_loaded):
    """The tiny random Llama with larger weights: peaky, position-sensitive distributions (a copy)."""
    import torch

    model = copy.deepcopy(tiny_loaded.model)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(40)  # tied with the output layer: logits spread out
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6)
            layer.self_attn.k_proj.weight.mul_(6)
    return model, tiny_loaded.tokenizer


def make(sharp, **kw) -> HFLM:
    model, tok = sharp
    return HFLM(model, tok, name="tiny", **kw)


def assert_close(a, b, tol=TOL):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.token_counts == rb.token_counts
        assert ra.prompt_tokens == rb.prompt_tokens
        for x, y in zip(ra.logprobs, rb.logprobs):
            assert abs(x - y) <= tol, (ra.logprobs, rb.logprobs)


def both(sharp, requests, **kw):
    cached = make(sharp, prefix_cache=True, batch_size=kw.pop("batch_size", 4), **kw)
    naive = make(sharp, prefix_cache=False, batch_size=1, **kw)
    return cached, cached.loglikelihood(requests), naive.loglikelihood(requests)


def direct_logprob(model, tok, context: str, continuation: str) -> float:
    """Reference: one full forward of the plain model on context + continuation ids."""
    import torch

    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([ctx + cont])).logits[0].float().log_softmax(-1)
    return sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))


def test_hflm_is_an_lm_and_restores_training_mode(sharp):
    lm = make(sharp)
    assert isinstance(lm, LM)
    model = sharp[0]
    model.train()
    try:
        lm.loglikelihood([LoglikelihoodRequest("Hi", (" there",))])
        assert model.training
    finally:
        model.eval()
    lm.generate(["Hi"], max_new_tokens=1)
    assert not model.training


def test_naive_path_matches_a_plain_forward(sharp):
    model, tok = sharp
    lm = make(sharp, prefix_cache=False, batch_size=3)
    reqs = [LoglikelihoodRequest(few_shot(q, [0, 1]), (" negative", " positive", " not at all good"))
            for q in REVIEWS[:4]]
    out = lm.loglikelihood(reqs)
    for r, s in zip(reqs, out):
        for cont, lp in zip(r.continuations, s.logprobs):
            assert abs(lp - direct_logprob(model, tok, r.context, cont)) <= TOL


def test_single_token_labels_cached_equals_naive(sharp):
    reqs = [LoglikelihoodRequest(few_shot(q, [0, 1, 2, 3]), LABELS) for q in REVIEWS]
    lm, cached, naive = both(sharp, reqs)
    assert_close(cached, naive)
    assert lm.last_stats.rows == len(reqs)  # all labels of a query read from one row
    assert lm.last_stats.groups == 1
    # The test can fail: scores differ across queries and labels by far more than the tolerance.
    spread = [r.logprobs[1] - r.logprobs[0] for r in cached]
    assert max(spread) - min(spread) > 100 * TOL


def test_multi_token_continuations_cached_equals_naive(sharp):
    conts = (" negative", " positive", " rather mixed feelings", " a masterpiece!")
    reqs = [LoglikelihoodRequest(few_shot(q, [4, 5]), conts) for q in REVIEWS[:7]]
    lm, cached, naive = both(sharp, reqs, batch_size=5)
    assert_close(cached, naive)
    assert lm.last_stats.rows == 7 * 2  # one row per multi-token label; single-token labels ride along
    assert all(r.token_counts[2] > 1 for r in cached)


def test_different_prefixes_knn_like(sharp):
    rng = random.Random(0)
    reqs = []
    for q in REVIEWS:
        demos = rng.sample(range(10), 3) if rng.random() < 0.5 else [7, 8, 9]  # some share all demos
        reqs.append(LoglikelihoodRequest(few_shot(q, demos), LABELS))
    lm, cached, naive = both(sharp, reqs, batch_size=3)
    assert_close(cached, naive)
    assert lm.last_stats.groups > 1
    instruction_tokens = lm.count_tokens(INSTRUCTION.rstrip())
    assert lm.last_stats.prefix_tokens >= instruction_tokens
    ungrouped = make(sharp, prefix_cache=True, batch_size=3, group_prefixes=False)
    assert_close(ungrouped.loglikelihood(reqs), naive)
    assert ungrouped.last_stats.groups == 1
    assert lm.last_stats.computed_tokens < ungrouped.last_stats.computed_tokens


def test_very_different_lengths_padding(sharp):
    contexts = ["Hi", few_shot("short", list(range(10))), "Review: ok\nSentiment:",
                few_shot("a much longer query " * 8, [1, 2]), INSTRUCTION + "x"]
    reqs = [LoglikelihoodRequest(c, (" yes", " no thanks")) for c in contexts]
    _, cached, naive = both(sharp, reqs, batch_size=5)
    assert_close(cached, naive)
    batched_naive = make(sharp, prefix_cache=False, batch_size=5).loglikelihood(reqs)
    assert_close(batched_naive, naive)


def test_single_request(sharp):
    req = LoglikelihoodRequest(few_shot("fine", [0, 1]), (" negative", " positive", " so-so really"))
    lm, cached, naive = both(sharp, [req])
    assert_close(cached, naive)
    assert lm.last_stats.prefix_tokens == cached[0].prompt_tokens - 1


def test_shared_prefix_is_computed_once(sharp):
    reqs = [LoglikelihoodRequest(few_shot(q, list(range(6))), LABELS) for q in REVIEWS]
    cached = make(sharp, prefix_cache=True)
    naive = make(sharp, prefix_cache=False)
    cached.loglikelihood(reqs)
    naive.loglikelihood(reqs)
    ctx = [cached.count_tokens(r.context) for r in reqs]
    assert cached.usage.prompt_tokens == naive.usage.prompt_tokens == sum(2 * (n + 1) for n in ctx)
    assert naive.usage.computed_tokens == sum(ctx)
    prefix = cached.last_stats.prefix_tokens
    assert cached.usage.computed_tokens == prefix + sum(n - prefix for n in ctx)
    assert cached.usage.computed_tokens < naive.usage.computed_tokens / 3
    assert cached.usage.requests == len(reqs) and cached.usage.seconds > 0
    cached.loglikelihood(reqs[:2])  # counters accumulate
    assert cached.usage.requests == len(reqs) + 2


def test_keep_prefix_reuses_the_previous_calls_prefix(sharp):
    """One query per call, as a server answers them: with the prefix kept, the second call computes only
    what follows the demonstrations it shares with the first, and every score is unchanged."""
    queries = ["a gripping, beautifully shot film", "boring", "it falls apart in the final act"]
    calls = [[LoglikelihoodRequest(few_shot(q, [0, 1, 2, 3]), LABELS)] for q in queries]
    calls.append([LoglikelihoodRequest(few_shot("boring", [4, 5]), LABELS)])  # other demos: less to reuse
    plain = make(sharp)
    expected, full = [], []
    for reqs in calls:
        expected.append(plain.loglikelihood(reqs))
        full.append(plain.last_stats.computed_tokens)
    lm = make(sharp)
    with lm.keep_prefix() as kept:
        assert kept
        got, computed = [], []
        for reqs in calls:
            got.append(lm.loglikelihood(reqs))
            computed.append(lm.last_stats.computed_tokens)
    for g, e in zip(got, expected):
        assert_close(g, e)
    assert computed[0] == full[0]
    shared = len(lm._encode(INSTRUCTION + "".join(demo(i) for i in [0, 1, 2, 3])))
    assert computed[1] <= full[1] - shared + 2 and computed[2] <= full[2] - shared + 2
    assert full[3] - shared < computed[3] < full[3]  # only the instruction is shared
    assert lm._kept is None and lm.loglikelihood(calls[1]) and lm.last_stats.computed_tokens == full[1]


def test_keep_prefix_is_a_no_op_without_prefix_caching(sharp):
    lm = make(sharp, prefix_cache=False)
    with lm.keep_prefix() as kept:
        assert not kept
        lm.loglikelihood([LoglikelihoodRequest(few_shot("boring", [0, 1]), LABELS)])
    assert lm._kept is None


def test_order_preserved_and_normalised(sharp):
    conts = (" negative", " positive", " very very negative")
    reqs = [LoglikelihoodRequest(few_shot(q, [0, 1]) + " " * (i % 2), conts) for i, q in enumerate(REVIEWS)]
    lm = make(sharp, batch_size=3)
    out = lm.loglikelihood(reqs)
    perm = list(range(len(reqs)))
    random.Random(1).shuffle(perm)
    shuffled = lm.loglikelihood([reqs[i] for i in perm])
    assert_close([out[i] for i in perm], shuffled)
    for i, r in enumerate(out):
        assert r.normalised() == tuple(lp / n for lp, n in zip(r.logprobs, r.token_counts))
        moved = " " * (i % 2)  # the context's trailing space is scored as part of each continuation
        assert r.token_counts == tuple(lm.count_tokens(moved + c) for c in conts)
        assert r.token_counts[:2] == ((1, 1) if i % 2 == 0 else (2, 2))


def test_trailing_whitespace_moves_to_the_continuation(sharp):
    lm = make(sharp)
    a = lm.loglikelihood([LoglikelihoodRequest("Review: great\nSentiment: ", ("positive", "negative"))])
    b = lm.loglikelihood([LoglikelihoodRequest("Review: great\nSentiment:", (" positive", " negative"))])
    assert_close(a, b, tol=0.0)


def test_empty_context_and_truncation(sharp):
    reqs = [LoglikelihoodRequest("", (" hello",)), LoglikelihoodRequest(few_shot("x", list(range(10))), LABELS)]
    lm, cached, naive = both(sharp, reqs, max_length=64)
    assert_close(cached, naive)
    assert lm.last_stats.truncated == 1 and cached[1].prompt_tokens == 64
    assert cached[0].prompt_tokens == 1  # the BOS/EOS token stands in for an empty context


def test_bfloat16_close_to_float32(tiny_loaded):
    import torch

    model = copy.deepcopy(tiny_loaded.model).to(torch.bfloat16)
    reqs = [LoglikelihoodRequest(few_shot(q, [0, 1, 2]), (" negative", " positive", " so so")) for q in REVIEWS[:4]]
    bf16 = HFLM(model, tiny_loaded.tokenizer, batch_size=4).loglikelihood(reqs)
    f32 = HFLM(tiny_loaded.model, tiny_loaded.tokenizer, prefix_cache=False).loglikelihood(reqs)
    assert_close(bf16, f32, tol=0.1)


def test_progress_bar_changes_no_result(sharp):
    lm = make(sharp)
    reqs = [LoglikelihoodRequest(few_shot("ok", [0]), LABELS)] * 3
    out = lm.loglikelihood(reqs, progress=True)
    assert [o.logprobs for o in out] == [o.logprobs for o in lm.loglikelihood(reqs, progress=False)]
    assert len(out) == 3 and all(len(o.logprobs) == len(LABELS) for o in out)
    assert lm.generate(["Hi"], max_new_tokens=2, progress=True) == lm.generate(["Hi"], max_new_tokens=2)


# ---------------------------------------------------------------------------------------------- generate

PROMPTS = ["Review: a lovely film\nSentiment:", "Translate to French: the cat", "Q: what is two plus two?\nA:",
           "Once upon a time there was a very long prompt about nothing in particular, and"]


def test_generate_max_new_tokens_counts_and_determinism(sharp):
    lm = make(sharp, batch_size=4)
    out = lm.generate(PROMPTS, max_new_tokens=6)
    assert lm.usage.generated_tokens <= 6 * len(PROMPTS)
    assert lm.usage.generated_tokens > 0 and lm.usage.requests == len(PROMPTS)
    for text in out:
        assert lm.count_tokens(text) <= 6 + 2  # re-tokenising decoded text may merge or split a little
    assert lm.generate(PROMPTS, max_new_tokens=6) == out
    longer = lm.generate(PROMPTS, max_new_tokens=12)
    assert all(b.startswith(a) for a, b in zip(out, longer))


def test_generate_batch_equals_one_at_a_time(sharp):
    batched = make(sharp, batch_size=4).generate(PROMPTS, max_new_tokens=10)
    single = make(sharp, batch_size=1)
    assert batched == [single.generate([p], max_new_tokens=10)[0] for p in PROMPTS]


def test_generate_stops_at_stop_strings(sharp):
    lm = make(sharp, batch_size=2)
    free = lm.generate(PROMPTS, max_new_tokens=16)
    text = max(free, key=len)
    i = PROMPTS.index(PROMPTS[free.index(text)])
    assert len(text) >= 4
    stop = text[len(text) // 2: len(text) // 2 + 2]
    before = lm.usage.generated_tokens
    cut = lm.generate([PROMPTS[i]], max_new_tokens=16, stop=["@@never@@", stop])
    assert cut == [text[: text.find(stop)]]
    assert lm.usage.generated_tokens - before < lm.count_tokens(text) + 2  # stopped early
    assert stop not in cut[0]


# ---------------------------------------------------------------------------------------------- planning

def test_plan_groups_splits_only_when_it_pays():
    instr = list(range(100, 110))
    a = [instr + list(range(200, 300)) + [i] for i in range(5)]  # five queries sharing 100 demo tokens
    b = [instr + list(range(400, 500)) + [i, i] for i in range(5)]
    shared, groups = plan_groups(a + b)
    assert shared == 10 and len(groups) == 2
    assert sorted(len(m) for _, m in groups) == [5, 5] and {p for p, _ in groups} == {110}
    shared, groups = plan_groups([instr + [i, i + 1] for i in range(20)])  # nothing more to share
    assert shared == 10 and len(groups) == 1
    assert groups[0][0] == 10 and sorted(groups[0][1]) == list(range(20))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=14),
       st.integers(0, 20))
def test_plan_groups_properties(contexts, overhead):
    shared, groups = plan_groups(contexts, overhead=overhead)
    members = sorted(i for _, m in groups for i in m)
    assert members == list(range(len(contexts)))
    for plen, m in groups:
        assert shared <= plen <= min(len(contexts[i]) for i in m) - 1
        assert all(contexts[i][:plen] == contexts[m[0]][:plen] for i in m)


# ---------------------------------------------------------------------------------------------- real model

@pytest.mark.integration
def test_real_model_cached_equals_naive(default_loaded, shared_data):
    lines = (shared_data / "sst2" / "stsa.binary.train").read_text(encoding="utf-8").splitlines()[:40]
    rng = random.Random(0)
    demos = rng.sample(lines[:30], 8)
    words = ("negative", "positive")
    prefix = INSTRUCTION + "".join(f"Review: {d[2:]}\nSentiment: {words[int(d[0])]}\n\n" for d in demos)
    reqs = [LoglikelihoodRequest(prefix + f"Review: {q[2:]}\nSentiment:", (" negative", " positive",
                                                                         " mostly positive"))
            for q in lines[30:36]]
    cached = HFLM.from_loaded(default_loaded, batch_size=4).loglikelihood(reqs)
    naive = HFLM.from_loaded(default_loaded, prefix_cache=False, batch_size=1).loglikelihood(reqs)
    assert_close(cached, naive)
    model, tok = default_loaded.model, default_loaded.tokenizer
    assert abs(cached[0].logprobs[1] - direct_logprob(model, tok, reqs[0].context, " positive")) <= TOL
