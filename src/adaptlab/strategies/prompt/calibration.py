"""Label scoring and contextual calibration (Zhao et al. 2021, "Calibrate Before Use").

Label probabilities are a softmax over the labels' log-likelihoods (summed, or length-normalised per
token with ``score="mean"``), i.e. renormalised over the label set. Contextual calibration estimates
the prompt's label bias ``p_cf`` by scoring content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``)
in the same prompt (same instruction, same demonstrations), averaging their label probabilities and
renormalising; a query's corrected probabilities are ``p / p_cf`` renormalised (``W = diag(p_cf)^-1``,
``b = 0``), and the prediction is their argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from adaptlab.lm.base import ContinuationScores

Scoring = Literal["sum", "mean"]
CONTENT_FREE: tuple[str, ...] = ("N/A", "", "[MASK]")


def label_logits(scores: ContinuationScores, score: Scoring = "sum") -> np.ndarray:
    """Per-label log-likelihoods: summed over tokens, or per token (``mean``)."""
    values = scores.logprobs if score == "sum" else scores.normalised()
    return np.asarray(values, dtype=np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numerically stable); a row with no finite score (a parsed API answer that
    matched no label) is uniform: it says nothing about the labels."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=-1, keepdims=True)
    z = np.where(np.isneginf(top), 0.0, z - np.where(np.isneginf(top), 0.0, top))
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def label_probs(scores: ContinuationScores, score: Scoring = "sum") -> np.ndarray:
    """Label probabilities renormalised over the label set."""
    return softmax(label_logits(scores, score))


def content_free_prior(scores: Sequence[ContinuationScores], score: Scoring = "sum") -> np.ndarray:
    """``p_cf``: the mean of the content-free inputs' label probabilities, renormalised."""
    if not scores:
        raise ValueError("contextual calibration needs at least one content-free input")
    p = np.mean([label_probs(s, score) for s in scores], axis=0)
    return p / p.sum()


def calibrate(probs: np.ndarray, p_cf: np.ndarray) -> np.ndarray:
    """Corrected probabilities ``∝ probs / p_cf``, renormalised (works on one row or a batch)."""
    p_cf = np.clip(np.asarray(p_cf, dtype=np.float64), 1e-12, None)
    q = np.asarray(probs, dtype=np.float64) / p_cf
    return q / q.sum(axis=-1, keepdims=True)
