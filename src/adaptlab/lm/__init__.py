"""The one model interface: `LM` (batched log-likelihood scoring and generation) and its backends."""

from adaptlab.lm.base import LM, ContinuationScores, LoglikelihoodRequest, NoModelLM, Usage, no_kept_prefix

__all__ = ["LM", "ContinuationScores", "LoglikelihoodRequest", "NoModelLM", "Usage", "no_kept_prefix"]
