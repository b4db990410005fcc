"""The one small `LM` interface that every strategy and backend goes through."""

from adaptlab.lm.base import LM, LoglikelihoodRequest, ContinuationScores, Usage

__all__ = ["LM", "LoglikelihoodRequest", "ContinuationScores", "Usage"]
