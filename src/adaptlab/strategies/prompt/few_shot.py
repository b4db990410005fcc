"""``few_shot``: ``k`` demonstrations before the query, chosen at random, balanced per class, or per query by
similarity (kNN retrieval from the cell's training pool)."""

from __future__ import annotations

from adaptlab.strategies.base import strategy
from adaptlab.strategies.prompt.artifact import PROMPT_ARTIFACT
from adaptlab.strategies.prompt.common import DemoConfig


@strategy("few_shot", family="prompt", artifact=PROMPT_ARTIFACT)
class FewShotConfig(DemoConfig):
    """``k`` demonstrations before the query."""
