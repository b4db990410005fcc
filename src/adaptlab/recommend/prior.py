"""A recommendation without a run (``adaptlab recommend --labels N``): published findings and this project's
measured runs, marked "estimate", with its sources and track record; and the scenario a command line describes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from adaptlab.errors import ConfigError
from adaptlab.recommend.text import Recommendation, fmt_ms, fmt_num
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
PROMPT_BELOW_PER_CLASS = 2
"""Multi-class: below this many labels per class only a prompt can use them (intent demo: the calibrated 8-shot
prompt at 1.1 per class; the probe won from 4.6 per class)."""
FINETUNE_TRY_PER_CLASS = 16
"""Two classes and generation: from here a fine-tune matches a prompt (SST-2: prompt tuning matched the best prompt
at n ~ 27, LoRA at n ~ 43); below it the prompt."""
FINETUNE_WINS_PER_CLASS = 32
"""Two classes: from here full, prompt tuning and LoRA beat the best prompt on SST-2 (n = 64), whatever the
volume."""
IA3_PER_CLASS = 128
"""From here ia3 matched LoRA on SST-2 (n = 256: 0.883 vs 0.882); below it ia3 lagged (n = 64: 0.687 vs 0.757)."""
LORA_OVER_PROBE_PER_CLASS = 256
"""Multi-class: from here a LoRA is expected to overtake the embedding probe (the probe saturates: SST-2 0.735 at
128 per class, 0.748 at 512; not yet checked on a multi-class run)."""
GENERATION_WORTH = 500
"""Generation: labels from which a fine-tune is expected to beat a prompt whatever the volume (no measured run)."""
BENCHMARKS = "docs/benchmarks.md"

_SOURCES = {
    "lescao": "Le Scao & Rush 2021, 'How many data points is a prompt worth?' (a prompt is worth roughly 100s of "
              "labelled examples)",
    "mosbach": "Mosbach et al. 2023, few-shot fine-tuning vs in-context learning, a fair comparison (comparable at "
               "equal model size, both varying a lot with few examples)",
    "bertsch": "Bertsch et al. 2024, in-context learning with long-context models (many-shot prompting approaches "
               "fine-tuning with many demonstrations, given the context to hold them)",
    "setfit": "Tunstall et al. 2022, SetFit (contrastive sentence-encoder fine-tuning, strong with 8 labels per class)",
    "brown": "Brown et al. 2020, GPT-3 (in-context learning needs no training; it grows with model size)",
    "tfew": "Liu et al. 2022, T-Few/IA3 (few-shot parameter-efficient fine-tuning beats in-context learning at far "
            "lower inference cost)",
}
_FAMILY = {"zero_shot": "prompt", "few_shot": "prompt", "calibrate": "prompt", "many_shot": "prompt",
           "prompt_search": "prompt", "lora": "LM fine-tune", "ia3": "LM fine-tune", "full": "LM fine-tune",
           "prompt_tuning": "LM fine-tune", "embedding_probe": "embedding classifier", "setfit": "embedding classifier"}
"""What agreement is judged on: the estimate names a strategy of the same family as the measured best."""


def family(choice: str) -> str:
    """Family of a choice ('lora or ia3' -> 'LM fine-tune': its first strategy's)."""
    return _FAMILY[choice.split()[0]]


@dataclass(frozen=True)
class MeasuredRun:
    """One measured point of docs/benchmarks.md the estimate is checked against."""

    task: str
    classes: int
    labels: int
    queries: float
    best: str
    """Strategy with the highest mean accuracy among the variants run with at most ``labels`` labels."""
    figures: str
    """The figures quoted from ``section`` (a heading of docs/benchmarks.md)."""
    section: str
    estimate: str
    """What the estimate says for this run (kept in step with the rule by tests/test_prior.py)."""


_FIVE = "All five methods at n = 64, 256, 1024"
_DEMO = "The demo"
MEASURED_RUNS = (
    MeasuredRun("SST-2", 2, 16, 100_000, "few_shot", "few_shot balanced k=4 0.715 ± 0.046; prompt_tuning 0.683, "
                "lora 0.613, embedding_probe 0.587 at n=16", "Compare: SST-2", "few_shot"),
    MeasuredRun("SST-2", 2, 64, 100_000, "full", "full 0.800 ± 0.056, prompt_tuning 0.768, lora 0.757, ia3 0.687; "
                "best prompt 0.715", _FIVE, "lora"),
    MeasuredRun("SST-2", 2, 256, 100_000, "full", "full 0.887 ± 0.029, ia3 0.883, lora 0.882, embedding_probe "
                "0.735; best prompt 0.715", _FIVE, "lora or ia3"),
    MeasuredRun("SST-2", 2, 1024, 100_000, "full", "full 0.915 (seed 0), lora 0.902 ± 0.008, ia3 0.895, "
                "embedding_probe 0.748", _FIVE, "lora or ia3"),
    MeasuredRun("intent (demo)", 7, 8, 200_000, "calibrate", "calibrate k=8 balanced 0.750 ± 0.007, few_shot k=8 "
                "0.434 (only prompts ran at 8 labels)", _DEMO, "calibrate"),
    MeasuredRun("intent (demo)", 7, 32, 200_000, "embedding_probe", "embedding_probe 0.760 against calibrate k=8 "
                "0.750 (one seed: within noise)", _DEMO, "embedding_probe or setfit"),
    MeasuredRun("intent (demo)", 7, 128, 200_000, "embedding_probe", "embedding_probe 0.903, lora 0.816, "
                "calibrate k=8 0.750", _DEMO, "embedding_probe or setfit"),
    MeasuredRun("intent (demo)", 7, 525, 200_000, "embedding_probe", "embedding_probe 0.934 (only the probe ran "
                "at 525; lora 0.816 at 128)", _DEMO, "embedding_probe or setfit"),
)
"""Every measured comparison in docs/benchmarks.md with a prompt and a trained variant at a label count (AG News
has prompt figures only, so it is not here)."""


@dataclass
class _Estimate:
    decision: str
    choice: str
    why: list[str] = field(default_factory=list)
    would: list[str] = field(default_factory=list)
    cites: list[str] = field(default_factory=list)


def _per_class(labels: int, n_classes: int, task_type: str) -> float:
    return labels / n_classes if task_type == "classification" else labels / 2


def _prompt_choice(n_classes: int, task_type: str) -> str:
    return "calibrate" if task_type == "classification" and n_classes > 2 else "few_shot"


def _by_cost(est: _Estimate, scenario: Scenario, fine_tune: str) -> _Estimate:
    """16-32 labels per class (two classes; generation 32-500 labels): comparable accuracy, so cost decides."""
    q, budget = scenario.queries_per_month, scenario.latency_budget_s
    est.cites += ["mosbach", "tfew", "brown"]
    comparable = "Fine-tuning and prompting are comparable here (Mosbach et al. 2023), so cost decides"
    if q >= PRIOR_VOLUME or (budget is not None and budget < 0.2):
        est.decision, est.choice = "finetune", fine_tune
        why = f"{fmt_num(q)} queries a month" if q >= PRIOR_VOLUME else f"a latency budget of {fmt_ms(budget or 0)}"
        est.why.append(f"{comparable}: at {why} a fine-tune's short input is cheaper and faster per query than a "
                       "prompt's demonstrations (Liu et al. 2022).")
        est.would.append(f"Below about {fmt_num(PRIOR_VOLUME)} queries a month (rule of thumb), a prompt is "
                         "expected to be cheaper overall.")
    else:
        est.why.append(f"{comparable}: at {fmt_num(q)} queries a month a longer prompt costs little and needs no "
                       "training (Brown et al. 2020).")
        est.would.append(f"Above about {fmt_num(PRIOR_VOLUME)} queries a month, a fine-tune ({fine_tune}) is "
                         "expected to be cheaper.")
    return est


def _classification(scenario: Scenario, n_classes: int) -> _Estimate:
    labels = scenario.labels_available or 0
    per = labels / n_classes
    prompt = _prompt_choice(n_classes, "classification")
    est = _Estimate("prompt", prompt)
    if n_classes > 2:
        if per < PROMPT_BELOW_PER_CLASS:
            est.cites += ["brown"]
            est.why.append(f"Under {PROMPT_BELOW_PER_CLASS} labels per class only a prompt can use them (Brown et al. "
                           "2020); calibrate it: on the 7-class intent demo calibration lifted 8-shot prompting "
                           "from 0.434 to 0.750, on 4-class AG News by 18 points.")
            est.would.append(f"With {PROMPT_BELOW_PER_CLASS * n_classes} labels ({PROMPT_BELOW_PER_CLASS} per class) an "
                             "embedding classifier (embedding_probe, setfit) is expected to beat the prompt.")
        elif per < LORA_OVER_PROBE_PER_CLASS:
            est.decision, est.choice = "finetune", "embedding_probe or setfit"
            est.cites += ["setfit"]
            est.why.append(f"With {n_classes} classes a k-shot prompt shows about k/{n_classes} examples per class, "
                           "while a sentence-embedding classifier uses every label and answers in ~20 ms: on the 7-class "
                           "intent demo the embedding probe matched the calibrated 8-shot prompt at 32 labels (0.760 vs "
                           "0.750) and beat it and LoRA at 128 (0.903 vs 0.750 and 0.816); SetFit is strong from 8 "
                           "labels per class (Tunstall et al. 2022). The probe re-trains in seconds, so task changes "
                           "cost little.")
            est.would.append(f"From about {LORA_OVER_PROBE_PER_CLASS} labels per class a LoRA is expected to overtake "
                             "the probe (it saturates: SST-2 0.735 at 128 per class, 0.748 at 512).")
        else:
            est.decision, est.choice = "finetune", "lora or embedding_probe"
            est.cites += ["lescao"]
            est.why.append(f"With {per:.0f} labels per class the labels outweigh a prompt (Le Scao & Rush 2021), and a "
                           "LoRA keeps gaining where an embedding probe saturates (SST-2: LoRA 0.902 vs probe 0.748 at "
                           "512 per class); keep the probe as the cheap baseline (not yet checked on a multi-class run).")
        return est
    if per < FINETUNE_TRY_PER_CLASS:
        est.cites += ["mosbach", "lescao", "setfit"]
        est.why.append(f"Under {FINETUNE_TRY_PER_CLASS} labels per class a two-class fine-tune trails the prompt "
                       "(SST-2 at n=16: prompt tuning 0.683, LoRA 0.613 vs 4-shot 0.715) and few-shot fine-tuning varies "
                       "a lot (Mosbach et al. 2023); a prompt is worth labels (Le Scao & Rush 2021): on SST-2 it was "
                       "matched by prompt tuning at n ~ 27, by LoRA at n ~ 43 and by an embedding probe only at "
                       "n ~ 189.")
        est.would.append(f"With {FINETUNE_TRY_PER_CLASS * 2} labels a fine-tune (LoRA, prompt tuning) is expected to "
                         "match the prompt; SetFit (Tunstall et al. 2022) is the label-efficient classifier to compare.")
        return est
    if per < FINETUNE_WINS_PER_CLASS:
        return _by_cost(est, scenario, "lora")
    est.decision, est.choice = "finetune", "lora or ia3" if per >= IA3_PER_CLASS else "lora"
    est.cites += ["lescao", "tfew"]
    est.why.append(f"From {FINETUNE_WINS_PER_CLASS} labels per class the fine-tunes beat the best SST-2 prompt (n=64: "
                   "full 0.800, prompt tuning 0.768, LoRA 0.757 vs 0.715; n=256: LoRA 0.882) — with this small model a prompt was worth "
                   "about 27-43 labels, fewer than the 100s Le Scao & Rush 2021 found; parameter-efficient "
                   "fine-tuning also cuts the per-query cost (Liu et al. 2022)."
                   + (" ia3 matched LoRA from 128 per class with a 250 KB artifact." if per >= IA3_PER_CLASS else
                      " ia3 lagged below 128 per class (0.687 at n=64)."))
    est.would.append(f"With fewer than {FINETUNE_WINS_PER_CLASS * 2} labels the fine-tune's edge is within seed noise "
                     "and cost decides.")
    return est


def _generation(scenario: Scenario) -> _Estimate:
    labels = scenario.labels_available or 0
    est = _Estimate("prompt", "few_shot")
    if labels < 2 * FINETUNE_TRY_PER_CLASS:
        est.cites += ["mosbach"]
        est.why.append(f"Below {2 * FINETUNE_TRY_PER_CLASS} examples a fine-tune is unreliable (Mosbach et al. 2023); "
                       "for generation the evidence is thinner (no measured run in docs).")
        est.would.append(f"With at least {2 * FINETUNE_TRY_PER_CLASS} examples a LoRA becomes worth trying.")
        return est
    if labels < GENERATION_WORTH:
        return _by_cost(est, scenario, "lora")
    est.decision, est.choice = "finetune", "lora"
    est.cites += ["lescao", "tfew"]
    est.why.append(f"With {labels} >= {GENERATION_WORTH} examples the labels outweigh a prompt (Le Scao & Rush 2021; "
                   "twice the classification figure, as generation evidence is thinner) and a fine-tune is cheaper "
                   "per query (Liu et al. 2022).")
    return est


def _decide(scenario: Scenario, task_type: str, n_classes: int) -> _Estimate:
    """The rule itself (no wording about the track record)."""
    est = _classification(scenario, n_classes) if task_type == "classification" else _generation(scenario)
    q = scenario.queries_per_month
    if family(est.choice) == "LM fine-tune" and scenario.task_changes_per_year >= 12 and q < 10 * PRIOR_VOLUME:
        changes = f"But the task changes {scenario.task_changes_per_year:g} times a year: each change re-pays training"
        if task_type == "classification" and n_classes > 2:
            est.choice = "embedding_probe or setfit"
            est.why.append(f"{changes}, while an embedding probe re-trains in seconds (intent demo: 8 s on 525 labels).")
        else:
            est.decision, est.choice = "prompt", _prompt_choice(n_classes, task_type)
            est.why.append(f"{changes}, while a prompt is edited for free.")
        est.would.append("With task changes less often than monthly, fine-tuning is expected to pay off.")
    if est.decision == "prompt":
        est.cites += ["bertsch"]
        est.would.append("many_shot can put more of the labels in the prompt if the model's context holds them: about "
                         "30-50 tokens per short example (SST-2/AG News prompts), so half a 2,048-token context takes "
                         "20-30; it approaches fine-tuning only with long contexts (Bertsch et al. 2024), and with "
                         "SmolLM2-135M 8 demonstrations did no better than 4 on SST-2 (0.683 vs 0.715).")
    return est


def track_record() -> tuple[list[dict[str, Any]], str]:
    """The estimate for each run of ``MEASURED_RUNS`` and whether its family matches the measured best; and the
    sentence 'agreed with A of N measured runs in docs/benchmarks.md'."""
    rows = []
    for run in MEASURED_RUNS:
        est = _decide(Scenario(labels_available=run.labels, queries_per_month=run.queries), "classification",
                      run.classes)
        rows.append({**asdict(run), "estimate_now": est.choice,
                     "agreed": family(est.choice) == family(run.best)})
    agreed = sum(r["agreed"] for r in rows)
    return rows, f"agreed with {agreed} of {len(rows)} measured runs in {BENCHMARKS}"


def _nearest(n_classes: int, per: float) -> MeasuredRun:
    """The measured run closest to the query: same kind (two classes or more), then nearest labels per class."""
    return min(MEASURED_RUNS, key=lambda r: ((r.classes > 2) != (n_classes > 2),
                                            abs(math.log(max(per, 0.5)) - math.log(r.labels / r.classes))))


def prior_recommendation(scenario: Scenario, *, task_type: str = "classification",
                         n_classes: int = 2) -> Recommendation:
    """A no-run estimate (basis "estimate") from published findings and this project's measured runs, with its
    sources and track record; confirm it with `adaptlab compare`.

    Thresholds are per class. More than two classes: a calibrated prompt under 2 labels per class, then an embedding
    classifier (embedding_probe / setfit), a LoRA from 256 per class. Two classes: a prompt under 16 per class, cost
    decides (volume >= PRIOR_VOLUME or a latency budget under 200 ms: fine-tune) up to 32, then LoRA (or ia3 from
    128). Generation: prompt under 32 examples, cost decides up to 500, then LoRA. Task changes monthly or more
    often turn an LLM fine-tune into a prompt below 10 x PRIOR_VOLUME queries a month.
    """
    if task_type not in ("classification", "generation") or n_classes < 1:
        raise ConfigError(f"need task type classification|generation and >= 1 class, got {task_type!r}, "
                          f"{n_classes}", field="--task-type")
    labels = scenario.labels_available or 0
    est = _decide(scenario, task_type, n_classes)
    have = "No label count given (--labels), so 0 is assumed" if scenario.labels_available is None else (
        f"You have {labels} labels")
    per = _per_class(labels, n_classes, task_type)
    kind = (f"{per:.1f} per class over {n_classes} classes: the thresholds are per class" if task_type ==
            "classification" else "generation, where evidence is thinner")
    reasons = [f"{have} ({kind})."] + est.why
    if scenario.accuracy_target is not None:
        reasons.append(f"Whether either reaches {scenario.accuracy_target:.3f} cannot be estimated without a run.")
    _, record = track_record()
    if task_type == "classification":
        near = _nearest(n_classes, per)
        reasons.append(f"Nearest measured run ({BENCHMARKS}, {near.section}): {near.task}, {near.classes} classes, "
                       f"{near.labels} labels: {near.figures}.")
    scope = "" if task_type == "classification" else "no generation run is measured yet; on classification "
    reasons.append(f"Track record: {scope}this rule {record} (SST-2, 2 classes, 16-1024 labels; intent demo, 7 "
                   "classes, 8-525 labels); the thresholds were set with these runs in view, so this is agreement, "
                   "not a validation; see docs/estimate.md.")
    cites = list(dict.fromkeys([*est.cites, "brown"]))  # Brown: the closing caveat below
    reasons.append("Sources: " + "; ".join(_SOURCES[c] for c in cites) + f"; measured runs: {BENCHMARKS}.")
    reasons.append("This is an estimate, not a measurement (thresholds from SmolLM2-135M-Instruct runs; larger models "
                   "make prompts stronger, Brown et al. 2020): confirm it with `adaptlab compare` on your data.")
    word = {"prompt": "prompt", "LM fine-tune": "fine-tune"}.get(family(est.choice), "train an embedding classifier")
    return Recommendation(decision=est.decision, choice=est.choice, cell_key=None,  # type: ignore[arg-type]
                          headline=f"Estimate: {word} ({est.choice}); confirm with a run.", reasons=reasons,
                          would_change=est.would, basis="estimate")
