"""``zero_shot``: the instruction and the query, nothing learned from labels."""

from __future__ import annotations

from adaptlab.strategies.base import strategy
from adaptlab.strategies.prompt.artifact import PROMPT_ARTIFACT
from adaptlab.strategies.prompt.common import PromptConfig


@strategy("zero_shot", family="prompt", artifact=PROMPT_ARTIFACT)
class ZeroShotConfig(PromptConfig):
    """Instruction + query; optional contextual calibration."""
