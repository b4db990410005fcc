"""Prompting strategies (no weight changes): zero-shot, few-shot, contextual calibration, prompt search.

Importing this package registers the strategies (`get_strategy`) and the ``prompt`` artifact kind
(`adaptlab.adapted.load_adapted`).
"""

from adaptlab.prompting.artifact import Calibration, KnnSpec, PromptAdapted
from adaptlab.prompting.format import Demo, PromptFormat, extract_answer, render_prompt
from adaptlab.prompting.search import PromptSearchConfig, fit_search
from adaptlab.prompting.strategies import (CalibrateConfig, FewShotConfig, StrategySpec,
                                           ZeroShotConfig, fit_prompt, get_strategy,
                                           list_strategies, register_strategy)

__all__ = [
    "Calibration", "CalibrateConfig", "Demo", "FewShotConfig", "KnnSpec", "PromptAdapted",
    "PromptFormat", "PromptSearchConfig", "StrategySpec", "ZeroShotConfig", "extract_answer",
    "fit_prompt", "fit_search", "get_strategy", "list_strategies", "register_strategy",
    "render_prompt",
]
