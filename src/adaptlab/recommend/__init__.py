"""Decide what to ship (a prompt, a fine-tune, or more labels) from measured results and a scenario, or estimate
it without a run from published findings."""

from adaptlab.recommend.decide import COST_TIE, MIN_GAIN, PROJECTION_FACTOR, STABLE, recommend
from adaptlab.recommend.prior import PRIOR_VOLUME, prior_recommendation, scenario_with
from adaptlab.recommend.text import Decision, Recommendation

__all__ = ["COST_TIE", "MIN_GAIN", "PRIOR_VOLUME", "PROJECTION_FACTOR", "STABLE", "Decision", "Recommendation",
           "prior_recommendation", "recommend", "scenario_with"]
