"""adaptlab.metrics against hand-computed values, scikit-learn, sacrebleu and slow references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaptlab import metrics as M
from adaptlab.errors import ConfigError

# true: a a a b b c c ; pred: a a b b a c zz  ("zz" is outside the label set)
Y_TRUE = ["a", "a", "a", "b", "b", "c", "c"]
Y_PRED = ["a", "a", "b", "b", "a", "c", "zz"]
LABELS = ["a", "b", "c"]

HYPS = ["the cat sat on the mat", "a dog runs fast in the park", "Ein Mädchen spielt im Garten",
        "the weather is nice today", "two men are playing football", "", "a woman reads a book"]
REFS = ["the cat is on the mat", "the dog runs quickly through the park", "Ein Mädchen spielt im Park",
        "today the weather is nice", "two men play soccer on a field", "a child smiles",
        "a woman is reading a book"]


def _random_labels(seed: int, n: int, k: int = 4, acc: float = 0.6) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    refs = [f"c{x}" for x in rng.integers(0, k, n)]
    preds = [r if rng.random() < acc else f"c{rng.integers(0, k + 1)}" for r in refs]  # c{k}: outside
    return preds, refs


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------

def test_hand_computed_classification():
    rep = M.classification_report(Y_TRUE, Y_PRED, LABELS)
    assert rep["labels"] == LABELS
    assert rep["accuracy"] == pytest.approx(4 / 7)
    pc = rep["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"], pc["a"]["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (pc["b"]["precision"], pc["b"]["recall"], pc["b"]["f1"]) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == pytest.approx((1.0, 1 / 2, 2 / 3))
    assert [pc[x]["support"] for x in LABELS] == [3, 2, 2]
    assert rep["macro_f1"] == pytest.approx(11 / 18)
    assert rep["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert rep["confusion_other"] == [0, 0, 1]
    json.dumps(rep)  # serialisable for metrics.json
    assert M.compute("accuracy", Y_PRED, Y_TRUE) == pytest.approx(4 / 7)
    assert M.compute("macro_f1", Y_PRED, Y_TRUE) == pytest.approx(11 / 18)
    assert M.compute("macro_f1", Y_PRED, Y_TRUE, labels=LABELS) == pytest.approx(11 / 18)


def test_confusion_follows_label_order():
    rep = M.classification_report(Y_TRUE, Y_PRED, ["c", "b", "a"])
    assert rep["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_on_random_data(seed):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    preds, refs = _random_labels(seed, 300)
    labels = ["c0", "c1", "c2", "c3", "c9"]  # c9: a label nobody uses (F1 = 0 as in zero_division=0)
    assert M.compute("accuracy", preds, refs) == pytest.approx(accuracy_score(refs, preds))
    assert M.compute("macro_f1", preds, refs, labels=labels) == pytest.approx(
        f1_score(refs, preds, labels=labels, average="macro", zero_division=0))
    assert M.compute("macro_f1", preds, refs) == pytest.approx(
        f1_score(refs, preds, labels=sorted(set(refs)), average="macro", zero_division=0))
    rep = M.classification_report(refs, preds, labels)
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    for i, lab in enumerate(labels):
        assert rep["per_class"][lab]["precision"] == pytest.approx(p[i])
        assert rep["per_class"][lab]["recall"] == pytest.approx(r[i])
        assert rep["per_class"][lab]["support"] == s[i]
    assert rep["macro_f1"] == pytest.approx(np.mean(f))
    assert rep["confusion"] == confusion_matrix(refs, preds, labels=labels).tolist()
    outside = sum(x not in labels for x in preds)
    assert sum(rep["confusion_other"]) == outside
    assert np.sum(rep["confusion"]) + outside == len(refs)


def test_labels_are_compared_as_stripped_strings():
    assert M.compute("accuracy", [1, " 0", "1"], ["1", "0", 0]) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------

def test_sacrebleu_corpus_scores_match_direct_calls():
    import sacrebleu

    assert M.compute("bleu", HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert M.compute("chrf", HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    sent = M.per_example("bleu", HYPS, REFS)
    assert sent == pytest.approx([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS)])
    assert M.per_example("chrf", HYPS, REFS) == pytest.approx(
        [sacrebleu.sentence_chrf(h, [r]).score for h, r in zip(HYPS, REFS)])
    # corpus BLEU is not the mean of sentence BLEU
    assert not math.isclose(M.compute("bleu", HYPS, REFS), float(sent.mean()), rel_tol=1e-3)
    assert M.METRICS["bleu"].scale == 100.0 and M.METRICS["chrf"].scale == 100.0


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_sacrebleu_statistics_resampling_matches_rescoring(name):
    import sacrebleu

    score = sacrebleu.corpus_bleu if name == "bleu" else sacrebleu.corpus_chrf
    n = len(HYPS)
    identity = M.METRICS[name].resampler(HYPS, REFS)(np.arange(n)[None, :])[0]
    assert identity == pytest.approx(M.compute(name, HYPS, REFS))
    idx = M.bootstrap_indices(n, 4, seed=7)
    dist = M.bootstrap_distribution(name, HYPS, REFS, n_resamples=4, seed=7)
    slow = [score([HYPS[i] for i in row], [[REFS[i] for i in row]]).score for row in idx]
    assert dist == pytest.approx(slow)


def test_rouge_l_hand_computed():
    # LCS("police killed the gunman", "police the gunman") = 3: P = 3/3, R = 3/4, F = 6/7
    assert M.compute("rouge_l", ["police the gunman"], ["police killed the gunman"]) == pytest.approx(6 / 7)
    # LCS("the gunman kill police" | "police killed the gunman") = 2 ("the gunman"): F = 1/2
    assert M.compute("rouge_l", ["the gunman kill police"], ["police killed the gunman"]) == pytest.approx(0.5)
    # non-ASCII words stay whole: LCS 3 of 3 vs 5 tokens -> P 1, R 3/5, F 3/4
    assert M.compute("rouge_l", ["Ein Mädchen spielt"], ["ein mädchen spielt im Park"]) == pytest.approx(0.75)
    scores = M.per_example("rouge_l", ["police the gunman", "x"], ["police killed the gunman", "y"])
    assert scores == pytest.approx([6 / 7, 0.0])
    assert M.compute("rouge_l", ["police the gunman", "x"], ["police killed the gunman", "y"]) == pytest.approx(3 / 7)


def test_rouge_l_equals_rouge_score_default_on_ascii():
    from rouge_score import rouge_scorer

    ascii_pairs = [(h, r) for h, r in zip(HYPS, REFS) if h.isascii() and r.isascii()]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [scorer.score(r, h)["rougeL"].fmeasure for h, r in ascii_pairs]
    got = M.per_example("rouge_l", [h for h, _ in ascii_pairs], [r for _, r in ascii_pairs])
    assert got == pytest.approx(expected)


def test_exact_match_normalisation():
    preds = ["  Paris ", "New   York", "STRASSE", "Paris.", "ﬁne", "Bonn"]
    refs = ["paris", "new york", "Straße", "Paris", "fine", "Berlin"]
    assert M.per_example("exact_match", preds, refs).tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert M.compute("exact_match", preds, refs) == pytest.approx(4 / 6)
    assert M.normalize_answer("  A\tB  ") == "a b"


# ---------------------------------------------------------------------------------------------
# registry and input checks
# ---------------------------------------------------------------------------------------------

def test_registry_and_unknown_metric():
    assert set(M.METRICS) >= {"accuracy", "macro_f1", "exact_match", "chrf", "bleu", "rouge_l"}
    assert M.METRICS["macro_f1"].kind == "classification" and M.METRICS["bleu"].kind == "generation"
    assert all(m.higher_is_better for m in M.METRICS.values())
    with pytest.raises(ConfigError) as err:
        M.get_metric("acuracy")
    assert err.value.field == "metric" and "accuracy" in err.value.one_line()


@pytest.mark.parametrize("preds,refs,msg", [
    (["a", "b"], ["a"], "differ in length"),
    ([], [], "empty"),
    (["a", None], ["a", "b"], r"preds\[1\] is None"),
    ("ab", "ab", "single string"),
])
def test_bad_inputs_raise_value_error(preds, refs, msg):
    with pytest.raises(ValueError, match=msg):
        M.compute("accuracy", preds, refs)
    with pytest.raises(ValueError, match=msg):
        M.bootstrap_ci("bleu", preds, refs)


def test_reference_outside_labels_raises():
    with pytest.raises(ValueError, match="not in labels"):
        M.classification_report(["a", "d"], ["a", "a"], ["a", "b"])


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["accuracy", "macro_f1", "exact_match"])
def test_ci_contains_estimate_and_narrows_with_more_data(name):
    small, big = _random_labels(3, 100), _random_labels(3, 2000)
    ci_s = M.bootstrap_ci(name, *small)
    ci_b = M.bootstrap_ci(name, *big)
    for ci in (ci_s, ci_b):
        assert ci.low <= ci.estimate <= ci.high and ci.low < ci.high
    assert (ci_b.high - ci_b.low) < 0.5 * (ci_s.high - ci_s.low)
    assert ci_b.estimate == pytest.approx(M.compute(name, *big))
    assert (ci_b.n, ci_b.confidence, ci_b.n_resamples) == (2000, 0.95, 1000)


def test_generation_ci_contains_estimate():
    hyps, refs = HYPS * 10, REFS * 10
    for name in ("bleu", "chrf", "rouge_l"):
        ci = M.bootstrap_ci(name, hyps, refs, n_resamples=200)
        assert ci.low <= ci.estimate <= ci.high and ci.low < ci.high


def test_bootstrap_is_deterministic_by_seed():
    preds, refs = _random_labels(4, 300)
    a = M.bootstrap_ci("macro_f1", preds, refs, seed=11)
    assert a == M.bootstrap_ci("macro_f1", preds, refs, seed=11)
    assert a != M.bootstrap_ci("macro_f1", preds, refs, seed=12)


def test_accuracy_ci_close_to_normal_approximation():
    preds, refs = _random_labels(5, 1000, acc=0.7)
    ci = M.bootstrap_ci("accuracy", preds, refs, n_resamples=2000, confidence=0.95)
    p = ci.estimate
    half = 1.959964 * math.sqrt(p * (1 - p) / 1000)
    assert ci.low == pytest.approx(p - half, abs=0.005)
    assert ci.high == pytest.approx(p + half, abs=0.005)


def test_vectorised_macro_f1_matches_slow_reference():
    from sklearn.metrics import f1_score

    preds, refs = _random_labels(6, 40, k=5, acc=0.5)  # small n: resamples can miss whole classes
    labels = sorted(set(refs))
    idx = M.bootstrap_indices(len(refs), 6, seed=9)
    dist = M.bootstrap_distribution("macro_f1", preds, refs, n_resamples=6, seed=9)
    slow = [f1_score([refs[i] for i in row], [preds[i] for i in row], labels=labels,
                     average="macro", zero_division=0) for row in idx]
    assert dist == pytest.approx(slow)


def test_resampling_does_not_depend_on_chunking(monkeypatch):
    preds, refs = _random_labels(7, 50)
    whole = M.bootstrap_distribution("macro_f1", preds, refs, n_resamples=30, seed=1)
    monkeypatch.setattr(M, "_MAX_INDEX_CELLS", 50 * 7)  # chunks of 7 resamples
    chunked = M.bootstrap_distribution("macro_f1", preds, refs, n_resamples=30, seed=1)
    assert chunked == pytest.approx(whole)


def test_bootstrap_argument_checks():
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap_ci("accuracy", ["a"], ["a"], confidence=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        M.bootstrap_ci("accuracy", ["a"], ["a"], n_resamples=0)


# ---------------------------------------------------------------------------------------------
# paired bootstrap
# ---------------------------------------------------------------------------------------------

def test_paired_identical_systems():
    preds, refs = _random_labels(8, 200)
    for name in ("accuracy", "macro_f1"):
        t = M.paired_bootstrap(name, preds, preds, refs)
        assert (t.diff, t.low, t.high, t.p_value) == (0.0, 0.0, 0.0, 1.0)
    t = M.paired_bootstrap("bleu", HYPS, HYPS, REFS, n_resamples=200)
    assert t.diff == 0.0 and t.p_value == 1.0
    s = M.paired_bootstrap_scores([0.2, 0.5, 0.9], [0.2, 0.5, 0.9])
    assert s.diff == 0.0 and s.p_value == 1.0


def test_paired_clearly_better_system():
    rng = np.random.default_rng(10)
    refs = [f"c{x}" for x in rng.integers(0, 3, 500)]
    good = [r if rng.random() < 0.8 else "wrong" for r in refs]
    bad = [r if rng.random() < 0.6 else "wrong" for r in refs]
    for name in ("accuracy", "macro_f1"):
        t = M.paired_bootstrap(name, good, bad, refs)
        assert t.p_value < 0.05 and t.low > 0 and t.diff == pytest.approx(t.estimate_a - t.estimate_b)
        rev = M.paired_bootstrap(name, bad, good, refs)
        assert rev.diff == pytest.approx(-t.diff) and rev.p_value == pytest.approx(t.p_value)
    t = M.paired_bootstrap("chrf", REFS * 20, HYPS * 20, REFS * 20, n_resamples=200)
    assert t.p_value < 0.05 and t.diff > 0


def test_paired_tiny_difference_is_not_significant():
    preds, refs = _random_labels(11, 1000, acc=0.7)
    other = list(preds)
    i = next(j for j, (p, r) in enumerate(zip(preds, refs)) if p != r)
    other[i] = refs[i]  # fixes exactly one example
    t = M.paired_bootstrap("accuracy", other, preds, refs)
    assert t.diff == pytest.approx(0.001) and t.p_value > 0.5


def test_paired_scores_agree_with_paired_accuracy():
    preds_a, refs = _random_labels(12, 400, acc=0.75)
    preds_b, _ = _random_labels(13, 400, acc=0.7)
    by_metric = M.paired_bootstrap("accuracy", preds_a, preds_b, refs, seed=3)
    by_scores = M.paired_bootstrap_scores(M.per_example("accuracy", preds_a, refs),
                                          M.per_example("accuracy", preds_b, refs), seed=3)
    for field in ("diff", "low", "high", "p_value"):
        assert getattr(by_scores, field) == pytest.approx(getattr(by_metric, field))
    with pytest.raises(ValueError, match="differ in length"):
        M.paired_bootstrap_scores([1.0, 0.0], [1.0])
