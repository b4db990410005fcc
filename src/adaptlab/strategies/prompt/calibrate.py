"""``calibrate``: contextual calibration (Zhao et al. 2021) of a zero-shot (``k: 0``, the default) or few-shot
prompt: the label probabilities are divided by those the prompt gives a content-free input."""

from __future__ import annotations

from pydantic import Field

from adaptlab.strategies.base import strategy
from adaptlab.strategies.prompt.artifact import PROMPT_ARTIFACT
from adaptlab.strategies.prompt.common import DemoConfig


@strategy("calibrate", family="prompt", artifact=PROMPT_ARTIFACT)
class CalibrateConfig(DemoConfig):
    """Contextual calibration over zero-shot (``k: 0``, default) or few-shot prompts."""

    calibrate: bool = True
    """Contextual calibration (always on for this strategy)."""
    k: int = Field(0, ge=0)
    """Number of demonstrations (0: calibrated zero-shot)."""
