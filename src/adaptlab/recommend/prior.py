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
"""More than two classes: below this many labels per class a calibrated prompt. No trained variant was measured
under 4 per class (AG News at 16 labels, 4 per class: LoRA 0.849 against calibrated many-shot 0.749); with about one
example of each class a fine-tune has little to learn from and few-shot fine-tuning varies a lot (Mosbach et al.
2023). 2-3 per class is extrapolated from the 4-per-class run."""
EMBEDDING_FROM_PER_CLASS = 16
"""More than two classes: from here an embedding classifier (SetFit, the probe) rather than a LoRA. Rests on AG News at
64 labels (16 per class): SetFit 0.882, LoRA 0.876, probe 0.864 (each ± 0.008: within about a point), the
classifiers about ten times faster a query (0.03-0.04 s against 0.38 s); at 16 labels (4 per class) LoRA led them by
12-15 points (0.849 against 0.733 and 0.704). 5-15 per class is not measured: SetFit is reported strong from 8 per
class (Tunstall et al. 2022), so the crossing may be lower."""
LORA_OVER_PROBE_PER_CLASS = 256
"""More than two classes: from here a LoRA is expected to overtake the embedding classifier, a frozen encoder's probe
levelling off as labels grow. Not measured (the fair comparison stops at 16 per class, where the three were within
about a point): a rule of thumb after Le Scao & Rush 2021 (labels outweigh a prompt from the 100s)."""
FINETUNE_TRY_PER_CLASS = 4
"""Two classes: from here cost decides between a prompt and a LoRA; below it the prompt. Not measured: only prompts
ran at 8 labels (SST-2 plain 8-shot 0.684 ± 0.141) and no fine-tune under 16, so from 4 to 7 per class the two are
taken as comparable (Mosbach et al. 2023: few-shot fine-tuning varies a lot with few examples)."""
FINETUNE_WINS_PER_CLASS = 8
"""Two classes: from here a LoRA (given >= 50 optimizer steps) beats the prompt whatever the volume. Rests on SST-2 at
16 labels: LoRA 0.800 ± 0.018 against every prompt with at most 16 labels (plain 8-shot 0.684, many-shot 0.651); at
64 labels LoRA 0.871 against many-shot 0.724."""
GENERATION_TRY = 32
"""Generation: examples below which a prompt (a fine-tune on fewer is unreliable, Mosbach et al. 2023; no measured
run)."""
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
    """Family of a choice ('lora or embedding_probe' -> 'LM fine-tune': its first strategy's)."""
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


_SST2 = "SST-2 (2 classes, majority baseline 0.507)"
_AGNEWS = "AG News (4 classes, majority baseline 0.293)"
MEASURED_RUNS = (
    MeasuredRun("SST-2", 2, 16, 100_000, "lora", "lora 0.800 ± 0.018; best prompts: few_shot k=8 plain 0.684 "
                "(8 labels), many_shot 0.651; setfit 0.576, embedding_probe 0.569 at n=16", _SST2, "lora"),
    MeasuredRun("SST-2", 2, 64, 100_000, "lora", "lora 0.871 ± 0.015, many_shot 0.724, setfit 0.667, "
                "embedding_probe 0.636 at n=64", _SST2, "lora"),
    MeasuredRun("AG News", 4, 16, 300_000, "lora", "lora 0.849 ± 0.008, many_shot calibrated 0.749, setfit 0.733, "
                "embedding_probe 0.704 at n=16; few_shot k=8 plain 0.671", _AGNEWS, "lora"),
    MeasuredRun("AG News", 4, 64, 300_000, "setfit", "setfit 0.882 ± 0.008, lora 0.876, embedding_probe 0.864, "
                "many_shot calibrated 0.744 at n=64", _AGNEWS, "embedding_probe or setfit"),
)
"""Every measured comparison in docs/benchmarks.md with a prompt and a trained variant at a label count, backed by a
JSON file with 3 seeds: the fair comparison (benchmarks/results/bench_fair_compare.json, 150 test examples, fine-tunes
given >= 50 optimizer steps). Its scenarios: SST-2 100k queries a month, AG News 300k."""


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
    """Where neither side was measured to win (two classes: 4-7 labels per class; generation 32-499 examples):
    taken as comparable, so cost decides."""
    q, budget = scenario.queries_per_month, scenario.latency_budget_s
    est.cites += ["mosbach", "tfew", "brown"]
    comparable = ("No run measured either side ahead at this many labels, and few-shot fine-tuning and prompting are "
                  "comparable at equal model size (Mosbach et al. 2023), so cost decides")
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
            est.cites += ["mosbach", "brown"]
            est.why.append(f"Under {PROMPT_BELOW_PER_CLASS} labels per class a fine-tune has about one example of each "
                           "class to learn from and few-shot fine-tuning varies a lot (Mosbach et al. 2023), while a "
                           "prompt needs no training (Brown et al. 2020); calibrate it: the best prompt on 4-class AG "
                           "News was calibrated (many-shot, 0.749 ± 0.054 with 16 labels; plain 8-shot 0.671).")
            est.would.append(f"With {PROMPT_BELOW_PER_CLASS * n_classes} labels ({PROMPT_BELOW_PER_CLASS} per class) a "
                             "LoRA is expected to beat the prompt (AG News at 4 per class: 0.849 against 0.749).")
        elif per < EMBEDDING_FROM_PER_CLASS:
            est.decision, est.choice = "finetune", "lora"
            est.cites += ["mosbach", "setfit"]
            est.why.append(f"With {n_classes} classes a k-shot prompt shows about k/{n_classes} examples of each, "
                           "while a fine-tune learns from every label: on 4-class AG News at 16 labels (4 per class) "
                           "LoRA given at least 50 optimizer steps, as a fair comparison needs (Mosbach et al. 2023), "
                           "reached 0.849 ± 0.008 against calibrated many-shot 0.749, SetFit 0.733 and the embedding "
                           "probe 0.704.")
            est.would.append(f"From {EMBEDDING_FROM_PER_CLASS} labels per class "
                             f"({EMBEDDING_FROM_PER_CLASS * n_classes} labels) an embedding classifier (setfit, "
                             "embedding_probe) is expected to match the LoRA at a tenth of the per-query time "
                             "(AG News at 16 per class: SetFit 0.882, LoRA 0.876, probe 0.864); SetFit is reported "
                             "strong from 8 per class (Tunstall et al. 2022), so the crossing may come sooner.")
        elif per < LORA_OVER_PROBE_PER_CLASS:
            est.decision, est.choice = "finetune", "embedding_probe or setfit"
            est.cites += ["setfit"]
            est.why.append(f"From {EMBEDDING_FROM_PER_CLASS} labels per class a sentence-embedding classifier "
                           "matches a LoRA at a tenth of the per-query time: on 4-class AG News at 64 labels (16 per "
                           "class) SetFit reached 0.882 ± 0.008, LoRA 0.876, the embedding probe 0.864 (trained in "
                           "3 s) and calibrated many-shot 0.744; SetFit is strong from 8 labels per class "
                           "(Tunstall et al. 2022). The probe re-trains in seconds, so task changes cost little.")
            est.would.append(f"From about {LORA_OVER_PROBE_PER_CLASS} labels per class a LoRA is expected to overtake "
                             "the probe (not measured: at 16 per class the three were within about a point); with "
                             f"fewer than {EMBEDDING_FROM_PER_CLASS} per class a LoRA led (AG News at 4 per class: "
                             "0.849 against SetFit 0.733).")
        else:
            est.decision, est.choice = "finetune", "lora or embedding_probe"
            est.cites += ["lescao"]
            est.why.append(f"With {per:.0f} labels per class the labels outweigh a prompt (Le Scao & Rush 2021), and a "
                           "fine-tuned LM is expected to keep gaining where a frozen encoder's probe levels off; keep "
                           "the probe as the cheap baseline (not measured: on AG News at 16 per class SetFit, LoRA and "
                           "the probe were within about a point, 0.882, 0.876 and 0.864).")
        return est
    if per < FINETUNE_TRY_PER_CLASS:
        est.cites += ["mosbach", "lescao"]
        est.why.append(f"Under {FINETUNE_TRY_PER_CLASS} labels per class only prompts were measured (SST-2 with 8 "
                       "labels: plain 8-shot 0.684 ± 0.141) and few-shot fine-tuning varies a lot (Mosbach et al. "
                       "2023); a prompt is worth labels (Le Scao & Rush 2021) and needs no training.")
        est.would.append(f"From {FINETUNE_TRY_PER_CLASS * 2} labels cost decides; with {FINETUNE_WINS_PER_CLASS * 2} "
                         f"({FINETUNE_WINS_PER_CLASS} per class) a LoRA is expected to beat the prompt (SST-2 at 16 "
                         "labels: 0.800 against 0.684).")
        return est
    if per < FINETUNE_WINS_PER_CLASS:
        est = _by_cost(est, scenario, "lora")
        est.would.append(f"With {FINETUNE_WINS_PER_CLASS * 2} labels a LoRA is expected to beat the prompt whatever "
                         "the volume (SST-2 at 16 labels: 0.800 against plain 8-shot 0.684).")
        return est
    est.decision, est.choice = "finetune", "lora"
    est.cites += ["mosbach", "lescao", "tfew"]
    est.why.append(f"From {FINETUNE_WINS_PER_CLASS} labels per class a LoRA given at least 50 optimizer steps, as a "
                   "fair comparison needs (Mosbach et al. 2023), beat every prompt on SST-2 (16 labels: 0.800 ± 0.018 "
                   "against plain 8-shot 0.684 and many-shot 0.651; 64 labels: 0.871 against many-shot 0.724): with "
                   "this small model a prompt was worth fewer than 16 labels, far fewer than the 100s Le Scao & Rush "
                   "2021 found; a parameter-efficient fine-tune also cuts the per-query cost (Liu et al. 2022). ia3, "
                   "prompt tuning and full fine-tuning were not in that comparison, so the estimate names LoRA.")
    est.would.append(f"With fewer than {FINETUNE_WINS_PER_CLASS * 2} labels no fine-tune was measured: cost decides "
                     f"down to {FINETUNE_TRY_PER_CLASS * 2} labels, then a prompt.")
    return est


def _generation(scenario: Scenario) -> _Estimate:
    labels = scenario.labels_available or 0
    est = _Estimate("prompt", "few_shot")
    if labels < GENERATION_TRY:
        est.cites += ["mosbach"]
        est.why.append(f"Below {GENERATION_TRY} examples a fine-tune is unreliable (Mosbach et al. 2023); "
                       "for generation the evidence is thinner (no measured run in docs).")
        est.would.append(f"With at least {GENERATION_TRY} examples a LoRA becomes worth trying.")
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
            est.why.append(f"{changes}, while an embedding probe re-trains in seconds (AG News: 3 s on 64 labels).")
        else:
            est.decision, est.choice = "prompt", _prompt_choice(n_classes, task_type)
            est.why.append(f"{changes}, while a prompt is edited for free.")
        est.would.append("With task changes less often than monthly, fine-tuning is expected to pay off.")
    if est.decision == "prompt":
        est.cites += ["bertsch"]
        est.would.append("many_shot can put more of the labels in the prompt if the model's context holds them: about "
                         "40 tokens per SST-2 review and 60 per AG News article (64 demonstrations made prompts of "
                         "2,568 and about 4,000 tokens), so half a 2,048-token context takes 16-25; it approaches "
                         "fine-tuning only with long contexts (Bertsch et al. 2024), and with SmolLM2-135M-Instruct it "
                         "trailed LoRA on the same labels (SST-2, 64: 0.724 against 0.871; AG News, 16: 0.749 against "
                         "0.849).")
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

    Thresholds are per class. More than two classes: a calibrated prompt under 2 labels per class, a LoRA up to 16,
    then an embedding classifier (embedding_probe / setfit), a LoRA again from 256. Two classes: a prompt under 4 per
    class, cost decides (volume >= PRIOR_VOLUME or a latency budget under 200 ms: fine-tune) up to 8, then LoRA.
    Generation: prompt under 32 examples, cost decides up to 500, then LoRA. Task changes monthly or more often turn
    an LLM fine-tune into a prompt (into an embedding probe with more than two classes) below 10 x PRIOR_VOLUME
    queries a month.
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
    reasons.append(f"Track record: {scope}this rule {record} (SST-2, 2 classes, and AG News, 4 classes, at 16 and "
                   "64 labels, 3 seeds each); the thresholds were set with these runs in view, so this is agreement, "
                   "not a validation; see docs/estimate.md.")
    cites = list(dict.fromkeys([*est.cites, "brown"]))  # Brown: the closing caveat below
    reasons.append("Sources: " + "; ".join(_SOURCES[c] for c in cites) + f"; measured runs: {BENCHMARKS}.")
    reasons.append("This is an estimate, not a measurement (thresholds from SmolLM2-135M-Instruct runs; larger models "
                   "make prompts stronger, Brown et al. 2020): confirm it with `adaptlab compare` on your data.")
    word = {"prompt": "prompt", "LM fine-tune": "fine-tune"}.get(family(est.choice), "train an embedding classifier")
    return Recommendation(decision=est.decision, choice=est.choice, cell_key=None,  # type: ignore[arg-type]
                          headline=f"Estimate: {word} ({est.choice}); confirm with a run.", reasons=reasons,
                          would_change=est.would, basis="estimate")
