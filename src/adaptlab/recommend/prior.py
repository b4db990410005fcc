"""A recommendation without a run (``adaptlab recommend --labels N``): published findings, marked "estimate";
and the scenario a command line describes."""

from __future__ import annotations

from typing import Any

from adaptlab.errors import ConfigError
from adaptlab.recommend.text import Recommendation, fmt_num
from adaptlab.results import Scenario


# -- Scenario from the command line ------------------------------------------------------------

_FLAGS = {"labels_available": "--labels", "latency_budget_s": "--latency-budget"}


def scenario_with(base: dict[str, Any] | None, overrides: dict[str, Any]) -> Scenario:
    """``base`` (a run's stored scenario) updated with the non-None ``overrides``; a bad value is a
    ConfigError naming the command-line flag."""
    data = {k: v for k, v in (base or {}).items() if k in Scenario.model_fields}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Scenario(**data)
    except ConfigError as exc:
        name = exc.field or ""
        flag = _FLAGS.get(name, "--" + name.replace("_", "-")) if name else None
        raise ConfigError(exc.message, field=flag, hint=exc.hint) from None


# -- Prior (no run) ----------------------------------------------------------------------------

PRIOR_VOLUME = 100_000.0
"""Queries a month from which per-query cost dominates in the prior (a rule of thumb, not measured)."""
_SOURCES = {
    "lescao": "Le Scao & Rush 2021 ('How many data points is a prompt worth?') found a prompt worth roughly "
              "100s of labelled examples on classification",
    "tfew": "Liu et al. 2022 (T-Few, IA3) found few-shot parameter-efficient fine-tuning more accurate than "
            "in-context learning at over 1000x lower inference cost",
    "mosbach": "Mosbach et al. 2023 (a fair comparison of few-shot fine-tuning and in-context learning) found "
               "fine-tuning matches or beats in-context learning at equal model size, both varying a lot across "
               "seeds with few examples",
    "brown": "Brown et al. 2020 (GPT-3) showed in-context learning needs no training, though each demonstration "
             "lengthens every query and its accuracy grows with model size",
}


def prior_recommendation(scenario: Scenario, *, task_type: str = "classification",
                         n_classes: int = 2) -> Recommendation:
    """A no-run estimate from published findings (basis "estimate"); confirm it with `adaptlab compare`.

    Fine-tuning needs at least ``max(32, 8 x n_classes)`` labels to be worth trying; from
    ``max(250, 25 x n_classes)`` (classification; twice that for generation) it is expected to match a
    prompt. In between, high volume (>= PRIOR_VOLUME queries a month) or a latency budget under 200 ms
    favour a parameter-efficient fine-tune, else a prompt. Task changes monthly or more often turn a
    fine-tune into a prompt below 10 x PRIOR_VOLUME queries a month (each change re-trains).
    """
    if task_type not in ("classification", "generation") or n_classes < 1:
        raise ConfigError(f"need task type classification|generation and >= 1 class, got {task_type!r}, "
                          f"{n_classes}", field="--task-type")
    labels, q = scenario.labels_available or 0, scenario.queries_per_month
    few = max(32, 8 * n_classes)
    worth = max(250, 25 * n_classes) * (1 if task_type == "classification" else 2)
    kind = f"{n_classes} classes" if task_type == "classification" else "generation, where evidence is thinner"
    have = "No label count given (--labels), so 0 is assumed" if scenario.labels_available is None else (
        f"You have {labels} labels")
    reasons = [f"{have}; {_SOURCES['lescao']} (we use {worth} for {kind})."]
    if labels < few:
        decision, why = "prompt", f"Below {few} labels fine-tuning is unreliable: {_SOURCES['mosbach']}."
        would = [f"With at least {few} labels a parameter-efficient fine-tune (IA3/LoRA) becomes worth trying."]
    elif labels >= worth:
        decision, why = "finetune", f"With {labels} >= {worth} labels, {_SOURCES['mosbach']}; {_SOURCES['tfew']}."
        would = [f"With fewer than {worth} labels, a prompt is expected to be worth as much as the labels."]
    elif q >= PRIOR_VOLUME or (scenario.latency_budget_s is not None and scenario.latency_budget_s < 0.2):
        decision, why = "finetune", f"At {fmt_num(q)} queries a month per-query cost dominates: {_SOURCES['tfew']}."
        would = [f"Below about {fmt_num(PRIOR_VOLUME)} queries a month (rule of thumb), prompting is expected to be "
                 "cheaper overall."]
    else:
        decision, why = "prompt", f"At {fmt_num(q)} queries a month longer prompts cost little: {_SOURCES['brown']}."
        would = [f"Above about {fmt_num(PRIOR_VOLUME)} queries a month, a parameter-efficient fine-tune is expected "
                 "to be cheaper."]
    reasons.append(why)
    if decision == "finetune" and scenario.task_changes_per_year >= 12 and q < 10 * PRIOR_VOLUME:
        decision = "prompt"
        reasons.append(f"But the task changes {scenario.task_changes_per_year:g} times a year: each change re-pays "
                       "training, while a prompt is edited for free.")
        would.append("With task changes less often than monthly, fine-tuning is expected to pay off.")
    if scenario.accuracy_target is not None:
        reasons.append(f"Whether either reaches {scenario.accuracy_target:.3f} cannot be estimated without a run.")
    reasons.append("This is an estimate from published findings, not a measurement: confirm it with "
                   "`adaptlab compare` on your data.")
    choice = "few_shot + calibrate" if decision == "prompt" else ("ia3 or lora" if labels < worth else "lora")
    return Recommendation(decision, choice, None,  # type: ignore[arg-type]
                          f"Estimate: {'prompt' if decision == 'prompt' else 'fine-tune'} ({choice}); confirm "
                          "with a run.", reasons, would, "estimate", None)
