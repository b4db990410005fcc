"""Quality metrics, bootstrap confidence intervals and paired significance tests.

Scales: accuracy, macro-F1, exact match and ROUGE-L lie in [0, 1]; chrF and BLEU use sacrebleu's
[0, 100]. Each `Metric` carries ``scale`` (the maximum score) so reports can format either.

Bootstrap: examples are resampled with replacement and the *corpus* metric is recomputed on each
resample (percentile interval), so the interval is right for non-decomposable metrics such as
macro-F1 and corpus BLEU/chrF. Resampling is vectorised: means of per-example scores for accuracy,
exact match and ROUGE-L; confusion counts (``np.bincount``) for macro-F1; summed sacrebleu
sufficient statistics for BLEU and chrF.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from adaptlab.errors import ConfigError, closest

logger = logging.getLogger(__name__)

Resampler = Callable[[np.ndarray], np.ndarray]
"""Maps a (m, n) array of resampled example indices to the m resampled corpus scores."""

_MAX_INDEX_CELLS = 2_000_000  # bound on rows * n of one index chunk (16 MB of int64)


# --------------------------------------------------------------------------------------------
# Input checks and normalisation
# --------------------------------------------------------------------------------------------

def _as_strings(values: Sequence[Any], what: str) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{what} must be a sequence of strings, not a single string")
    out = []
    for i, v in enumerate(values):
        if v is None:
            raise ValueError(f"{what}[{i}] is None; expected a string")
        out.append(v if isinstance(v, str) else str(v))
    return out


def _check_pair(preds: Sequence[Any], refs: Sequence[Any]) -> tuple[list[str], list[str]]:
    p, r = _as_strings(preds, "preds"), _as_strings(refs, "refs")
    if len(p) != len(r):
        raise ValueError(f"preds and refs differ in length: {len(p)} predictions vs {len(r)} references")
    if not p:
        raise ValueError("preds and refs are empty; a metric needs at least one example")
    return p, r


def normalize_answer(text: str) -> str:
    """Exact-match normalisation: Unicode NFKC, whitespace runs collapsed to one space, surrounding
    whitespace stripped, case folded. Punctuation and articles are kept (unlike SQuAD)."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _label(text: str) -> str:
    return text.strip()


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

def _label_codes(preds: list[str], refs: list[str], labels: Sequence[str] | None
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Integer codes: refs in 0..K-1 (must be in ``labels``), preds outside ``labels`` -> K."""
    refs = [_label(r) for r in refs]
    labels = sorted(set(refs)) if labels is None else [_label(str(x)) for x in labels]
    index = {lab: i for i, lab in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels contain duplicates: {labels}")
    missing = sorted(set(refs) - index.keys())
    if missing:
        raise ValueError(f"reference label(s) {missing} are not in labels {labels}")
    k = len(labels)
    t = np.fromiter((index[r] for r in refs), dtype=np.int64, count=len(refs))
    p = np.fromiter((index.get(_label(x), k) for x in preds), dtype=np.int64, count=len(preds))
    return labels, t, p


def _macro_f1_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Macro-F1 from confusion counts of shape (..., K, K+1) (last column: out-of-label preds).

    Per class F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); 0 where both are 0
    (scikit-learn's ``zero_division=0``)."""
    k = conf.shape[-2]
    tp = np.diagonal(conf[..., :k], axis1=-2, axis2=-1).astype(np.float64)
    denom = conf.sum(axis=-1) + conf[..., :k].sum(axis=-2)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=-1)


def _macro_f1_resampler(preds: list[str], refs: list[str], labels: Sequence[str] | None) -> Resampler:
    labs, t, p = _label_codes(preds, refs, labels)
    k = len(labs)
    cells = k * (k + 1)
    pair = t * (k + 1) + p

    def resample(idx: np.ndarray) -> np.ndarray:
        m = idx.shape[0]
        flat = (pair[idx] + np.arange(m)[:, None] * cells).ravel()
        conf = np.bincount(flat, minlength=m * cells).reshape(m, k, k + 1)
        return _macro_f1_from_confusion(conf)

    return resample


def _macro_f1(preds: list[str], refs: list[str], labels: Sequence[str] | None) -> float:
    n = len(preds)
    return float(_macro_f1_resampler(preds, refs, labels)(np.arange(n)[None, :])[0])


def _accuracy_scores(preds: list[str], refs: list[str]) -> np.ndarray:
    return np.array([_label(p) == _label(r) for p, r in zip(preds, refs)], dtype=np.float64)


def _exact_match_scores(preds: list[str], refs: list[str]) -> np.ndarray:
    return np.array([normalize_answer(p) == normalize_answer(r) for p, r in zip(preds, refs)],
                    dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------

class _UnicodeWordTokenizer:
    """rouge-score's default tokenizer (lower-case, alphanumeric runs) made Unicode-aware: the
    default drops every non-ASCII letter ("Mädchen" -> "m dchen"). Identical on ASCII text."""

    _word = re.compile(r"[^\W_]+")

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())


def _rouge_l_scores(preds: list[str], refs: list[str]) -> np.ndarray:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeWordTokenizer())
    return np.array([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)],
                    dtype=np.float64)


def _sacrebleu_metric(name: str, *, sentence: bool = False) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        # Sentence BLEU: 'exp' smoothing plus effective order, as sacrebleu recommends.
        return BLEU(effective_order=True) if sentence else BLEU()
    return CHRF()


def _sacrebleu_corpus(name: str) -> Callable[[list[str], list[str], Any], float]:
    def corpus(preds: list[str], refs: list[str], labels: Any = None) -> float:
        return float(_sacrebleu_metric(name).corpus_score(preds, [refs]).score)
    return corpus


def _sacrebleu_sentences(name: str) -> Callable[[list[str], list[str]], np.ndarray]:
    def per_example(preds: list[str], refs: list[str]) -> np.ndarray:
        m = _sacrebleu_metric(name, sentence=True)
        return np.array([m.sentence_score(p, [r]).score for p, r in zip(preds, refs)], dtype=np.float64)
    return per_example


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of the n examples occurs in each resample: (m, n) from (m, n) indices."""
    m = idx.shape[0]
    flat = (idx + np.arange(m)[:, None] * n).ravel()
    return np.bincount(flat, minlength=m * n).reshape(m, n)


def _sacrebleu_resampler(name: str) -> Callable[[list[str], list[str], Any], Resampler]:
    """Resample via per-sentence sufficient statistics (what ``sacrebleu.significance`` does).

    ``_extract_corpus_statistics``/``_compute_score_from_stats`` are sacrebleu's own (underscored)
    bootstrap API since 2.0; without them each resample is rescored from text (slow)."""
    def make(preds: list[str], refs: list[str], labels: Any = None) -> Resampler:
        m = _sacrebleu_metric(name)
        n = len(preds)
        if not (hasattr(m, "_extract_corpus_statistics") and hasattr(m, "_compute_score_from_stats")):
            logger.warning("sacrebleu lacks sufficient-statistics API; %s bootstrap rescoring text (slow)", name)

            def slow(idx: np.ndarray) -> np.ndarray:
                return np.array([m.corpus_score([preds[i] for i in row], [[refs[i] for i in row]]).score
                                 for row in idx])
            return slow

        stats = np.asarray(m._extract_corpus_statistics(preds, [refs]), dtype=np.float64)

        def fast(idx: np.ndarray) -> np.ndarray:
            summed = np.rint(_counts(idx, n) @ stats).astype(np.int64)
            return np.array([m._compute_score_from_stats(row.tolist()).score for row in summed])
        return fast
    return make


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A corpus metric with per-example scores and a vectorised bootstrap resampler.

    ``corpus`` is the headline score; ``per_example`` gives one score per example. For accuracy,
    exact match and ROUGE-L the corpus score is the mean of the per-example scores (``is_mean``);
    corpus BLEU/chrF are NOT the mean of sentence scores, and macro-F1's per-example score is 0/1
    correctness (macro-F1 does not decompose).
    """

    name: str
    kind: Literal["classification", "generation"]
    scale: float
    """Maximum score: 1.0 for [0, 1] metrics, 100.0 for sacrebleu's chrF/BLEU."""
    higher_is_better: bool
    is_mean: bool
    description: str
    per_example_fn: Callable[[list[str], list[str]], np.ndarray] = field(repr=False)
    corpus_fn: Callable[[list[str], list[str], Sequence[str] | None], float] | None = field(
        default=None, repr=False)
    resampler_fn: Callable[[list[str], list[str], Sequence[str] | None], Resampler] | None = field(
        default=None, repr=False)

    def corpus(self, preds: Sequence[Any], refs: Sequence[Any], *,
               labels: Sequence[str] | None = None) -> float:
        """Corpus score. ``labels`` (classification) fixes the class set; default: labels in refs."""
        p, r = _check_pair(preds, refs)
        if self.corpus_fn is None:
            return float(self.per_example_fn(p, r).mean())
        return float(self.corpus_fn(p, r, labels))

    def per_example(self, preds: Sequence[Any], refs: Sequence[Any]) -> np.ndarray:
        """Per-example scores, float64 array of length n, on the same ``scale``."""
        p, r = _check_pair(preds, refs)
        return self.per_example_fn(p, r)

    def resampler(self, preds: Sequence[Any], refs: Sequence[Any], *,
                  labels: Sequence[str] | None = None) -> Resampler:
        """Function from (m, n) resampled indices to the m resampled corpus scores."""
        p, r = _check_pair(preds, refs)
        if self.resampler_fn is not None:
            return self.resampler_fn(p, r, labels)
        scores = self.per_example_fn(p, r)
        return lambda idx: scores[idx].mean(axis=1)


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", "classification", 1.0, True, True,
                       "fraction of predictions equal to the reference label (after strip)",
                       _accuracy_scores),
    "macro_f1": Metric("macro_f1", "classification", 1.0, True, False,
                       "unweighted mean of per-class F1 (zero_division=0); predictions outside the "
                       "label set count as wrong",
                       _accuracy_scores, _macro_f1, _macro_f1_resampler),
    "exact_match": Metric("exact_match", "generation", 1.0, True, True,
                          "normalised string equality (NFKC, whitespace collapsed, case folded)",
                          _exact_match_scores),
    "chrf": Metric("chrf", "generation", 100.0, True, False,
                   "sacrebleu chrF (character 6-grams, beta=2), 0..100",
                   _sacrebleu_sentences("chrf"), _sacrebleu_corpus("chrf"), _sacrebleu_resampler("chrf")),
    "bleu": Metric("bleu", "generation", 100.0, True, False,
                   "sacrebleu corpus BLEU (13a tokens), 0..100; per-example is smoothed sentence BLEU",
                   _sacrebleu_sentences("bleu"), _sacrebleu_corpus("bleu"), _sacrebleu_resampler("bleu")),
    "rouge_l": Metric("rouge_l", "generation", 1.0, True, True,
                      "mean ROUGE-L F-measure (rouge-score LCS, Unicode word tokens, no stemming)",
                      _rouge_l_scores),
}


def get_metric(metric: str | Metric) -> Metric:
    """The registered metric named ``metric``; ConfigError with a suggestion if unknown."""
    if isinstance(metric, Metric):
        return metric
    if metric in METRICS:
        return METRICS[metric]
    guess = closest(str(metric), METRICS)
    hint = f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(sorted(METRICS))
    raise ConfigError(f"unknown metric '{metric}'", field="metric", hint=hint)


def compute(metric: str | Metric, preds: Sequence[Any], refs: Sequence[Any], *,
            labels: Sequence[str] | None = None) -> float:
    """Corpus score of ``metric`` (see `Metric.scale` for its range)."""
    return get_metric(metric).corpus(preds, refs, labels=labels)


def per_example(metric: str | Metric, preds: Sequence[Any], refs: Sequence[Any]) -> np.ndarray:
    """Per-example scores of ``metric`` (sentence BLEU/chrF; 0/1 correctness for macro-F1)."""
    return get_metric(metric).per_example(preds, refs)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CI:
    """Percentile bootstrap interval around the full-sample ``estimate``."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int = 0
    metric: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap comparison of system A against system B on the same examples.

    ``diff`` = score(A) - score(B); [low, high] its percentile interval; ``p_value`` two-sided
    (fraction of resamples whose difference does not share the sign of ``diff``, doubled, capped
    at 1; p = 0 means p < 2 / n_resamples; p = 1 when ``diff`` is 0)."""

    diff: float
    low: float
    high: float
    p_value: float
    estimate_a: float
    estimate_b: float
    confidence: float
    n: int
    n_resamples: int
    metric: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_bootstrap_args(n: int, n_resamples: int, confidence: float) -> None:
    if n < 1:
        raise ValueError("bootstrap needs at least one example")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _index_chunks(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = max(1, min(n_resamples, _MAX_INDEX_CELLS // n))
    done = 0
    while done < n_resamples:
        m = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(m, n))
        done += m


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """The (n_resamples, n) example indices every bootstrap here draws for this ``n`` and ``seed``."""
    _check_bootstrap_args(n, n_resamples, 0.5)
    return np.concatenate(list(_index_chunks(n, n_resamples, seed)))


def _run(resamplers: Sequence[Resampler], n: int, n_resamples: int, seed: int) -> list[np.ndarray]:
    out: list[list[np.ndarray]] = [[] for _ in resamplers]
    for idx in _index_chunks(n, n_resamples, seed):
        for acc, fn in zip(out, resamplers):
            acc.append(np.asarray(fn(idx), dtype=np.float64))
    return [np.concatenate(acc) for acc in out]


def _interval(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_distribution(metric: str | Metric, preds: Sequence[Any], refs: Sequence[Any], *,
                           n_resamples: int = 1000, seed: int = 0,
                           labels: Sequence[str] | None = None) -> np.ndarray:
    """Corpus scores of ``metric`` on resamples ``bootstrap_indices(n, n_resamples, seed)``."""
    m = get_metric(metric)
    n = len(_check_pair(preds, refs)[0])
    _check_bootstrap_args(n, n_resamples, 0.5)
    return _run([m.resampler(preds, refs, labels=labels)], n, n_resamples, seed)[0]


def bootstrap_ci(metric: str | Metric, preds: Sequence[Any], refs: Sequence[Any], *,
                 n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 labels: Sequence[str] | None = None) -> CI:
    """Percentile bootstrap CI of the corpus metric, resampling examples (deterministic per seed)."""
    m = get_metric(metric)
    p, r = _check_pair(preds, refs)
    _check_bootstrap_args(len(p), n_resamples, confidence)
    dist = bootstrap_distribution(m, p, r, n_resamples=n_resamples, seed=seed, labels=labels)
    low, high = _interval(dist, confidence)
    return CI(m.corpus(p, r, labels=labels), low, high, confidence, len(p), n_resamples, m.name)


def _paired(name: str, est_a: float, est_b: float, dist_a: np.ndarray, dist_b: np.ndarray,
            n: int, n_resamples: int, confidence: float) -> PairedTest:
    diff = est_a - est_b
    diffs = dist_a - dist_b
    low, high = _interval(diffs, confidence)
    if diff == 0.0:
        p_value = 1.0
    else:
        flips = int(np.count_nonzero(diffs * math.copysign(1.0, diff) <= 0.0))
        p_value = min(1.0, 2.0 * flips / n_resamples)
    return PairedTest(diff, low, high, p_value, est_a, est_b, confidence, n, n_resamples, name)


def paired_bootstrap(metric: str | Metric, preds_a: Sequence[Any], preds_b: Sequence[Any],
                     refs: Sequence[Any], *, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0, labels: Sequence[str] | None = None) -> PairedTest:
    """Paired bootstrap test (Koehn 2004; Berg-Kirkpatrick et al. 2012) of corpus metric A - B.

    Both systems are rescored on the same resampled examples each time."""
    m = get_metric(metric)
    pa, r = _check_pair(preds_a, refs)
    pb, _ = _check_pair(preds_b, refs)
    if labels is None and m.kind == "classification":
        labels = sorted({_label(x) for x in r})
    _check_bootstrap_args(len(r), n_resamples, confidence)
    dist_a, dist_b = _run([m.resampler(pa, r, labels=labels), m.resampler(pb, r, labels=labels)],
                          len(r), n_resamples, seed)
    return _paired(m.name, m.corpus(pa, r, labels=labels), m.corpus(pb, r, labels=labels),
                   dist_a, dist_b, len(r), n_resamples, confidence)


def paired_bootstrap_scores(scores_a: Sequence[float] | np.ndarray, scores_b: Sequence[float] | np.ndarray,
                            *, n_resamples: int = 1000, confidence: float = 0.95,
                            seed: int = 0) -> PairedTest:
    """Paired bootstrap on two systems' per-example scores; the statistic is the mean score."""
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b differ in length: {a.size} vs {b.size}")
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise ValueError("per-example scores must be finite numbers")
    _check_bootstrap_args(a.size, n_resamples, confidence)
    dist_a, dist_b = _run([lambda idx: a[idx].mean(axis=1), lambda idx: b[idx].mean(axis=1)],
                          a.size, n_resamples, seed)
    return _paired("mean", float(a.mean()), float(b.mean()), dist_a, dist_b, a.size, n_resamples,
                   confidence)


# --------------------------------------------------------------------------------------------
# Classification report
# --------------------------------------------------------------------------------------------

def classification_report(y_true: Sequence[Any], y_pred: Sequence[Any],
                          labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    ``confusion[i][j]`` counts examples of true ``labels[i]`` predicted as ``labels[j]``;
    ``confusion_other[i]`` counts those of true ``labels[i]`` predicted outside ``labels`` (they
    count as wrong). Every reference must be in ``labels``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    p, r = _check_pair(y_pred, y_true)
    labs, t, pc = _label_codes(p, r, labels)
    if not labs:
        raise ValueError("labels is empty")
    k = len(labs)
    true_s = [labs[i] for i in t]
    pred_s = [labs[i] if i < k else _label(x) for i, x in zip(pc, p)]
    prec, rec, f1, support = precision_recall_fscore_support(
        true_s, pred_s, labels=labs, average=None, zero_division=0)
    conf = confusion_matrix(true_s, pred_s, labels=labs)
    other = np.bincount(t[pc == k], minlength=k)
    return {
        "labels": list(labs),
        "n": len(r),
        "accuracy": float(np.mean(t == pc)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {lab: {"precision": float(prec[i]), "recall": float(rec[i]),
                            "f1": float(f1[i]), "support": int(support[i])}
                      for i, lab in enumerate(labs)},
        "confusion": conf.astype(int).tolist(),
        "confusion_other": other.astype(int).tolist(),
    }
