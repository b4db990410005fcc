"""The shared shape of a compare run's results: one `CellRecord` per grid cell, and the `Scenario`.

`adaptlab.store` writes and reads these, `adaptlab.analysis` computes curves, crossovers and break-even
from them, `adaptlab.recommend` decides from them, and `adaptlab.report` draws them. Hand-made
records (in tests) exercise the analysis exactly as a real run does.

Cost conventions (per query = one test input answered):

* ``query_flops``: 2·N·(prompt + scored tokens) of one query served alone (`adaptlab.costs`).
* ``query_seconds``: measured median single-query latency (``latency_p50_s``; falls back to the
  batched seconds per query when the median was not measured).
* Under a scenario with ``prefix_cache`` (the serving engine keeps prompt prefixes, as vLLM and
  llama.cpp servers do), `CellRecord.served` swaps in the warm latency (``latency_p50_warm_s``) and the
  FLOPs actually computed per query in the batched run (``flops_amortized``) where they were measured.
* ``train_seconds`` / ``train_flops``: the one-off cost of adapting (fine-tuning; for prompt
  strategies their fit: calibration passes, prompt search, embedding the demo pool).
* Money: seconds x the scenario's price per hour of the hardware the run used (``Scenario.hour_price``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Family = Literal["prompt", "finetune"]
PROMPT_STRATEGIES = ("zero_shot", "few_shot", "calibrate", "prompt_search")
FINETUNE_METHODS = ("lora", "full", "prompt_tuning", "ia3", "embedding_probe")


def family_of(strategy: str) -> Family:
    """``"prompt"`` for prompt strategies (no weight changes), ``"finetune"`` for the rest."""
    return "prompt" if strategy in PROMPT_STRATEGIES else "finetune"


@dataclass
class Scenario:
    """The user's situation the recommendation is for (all fields optional but documented)."""

    queries_per_month: float = 100_000.0
    """Expected queries the adapted model will answer per month."""
    price_per_hour: float = 0.10
    """$ per hour of the hardware that ran the experiment (CPU-hour here; accelerator-hour on GPU)."""
    train_price_per_hour: float | None = None
    """$ per hour for training if it differs (None: ``price_per_hour``)."""
    latency_budget_s: float | None = None
    """Maximum acceptable single-query latency in seconds (None: no constraint)."""
    accuracy_target: float | None = None
    """Metric value the team needs (same scale as the task metric, e.g. 0.85; None: best wins)."""
    labels_available: int | None = None
    """Labelled examples on hand (None: as many as the run used)."""
    months: float = 12.0
    """Horizon for total cost of ownership (how long the adapted model will serve)."""
    task_changes_per_year: float = 0.0
    """How often the task definition changes (each change re-pays training; prompts are edited for free)."""
    prefix_cache: bool = False
    """The serving engine keeps prompt prefixes between queries (vLLM automatic prefix caching, llama.cpp
    ``cache_prompt``): a few-shot prompt's demonstrations are computed once, not per query. False (the
    default) prices every query computed in full."""

    def __post_init__(self) -> None:
        for name in ("queries_per_month", "price_per_hour", "months", "task_changes_per_year"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
                raise ValueError(f"scenario.{name} must be a number >= 0, got {value!r}")
        for name in ("train_price_per_hour", "latency_budget_s", "accuracy_target"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"scenario.{name} must be a number >= 0 or null, got {value!r}")
        if not isinstance(self.prefix_cache, bool):
            raise ValueError(f"scenario.prefix_cache must be true or false, got {self.prefix_cache!r}")
        if self.labels_available is not None and self.labels_available < 0:
            raise ValueError(f"scenario.labels_available must be >= 0, got {self.labels_available!r}")

    @property
    def train_hour_price(self) -> float:
        return self.price_per_hour if self.train_price_per_hour is None else self.train_price_per_hour

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CellRecord:
    """One finished (or failed) grid cell: a strategy with its options, trained/prompted with
    ``n_train`` labelled examples and ``seed``, evaluated on the run's shared test examples."""

    key: str
    """Hash of the resolved cell config (identifies the cell for resume)."""
    strategy: str
    """Registry name: zero_shot, few_shot, calibrate, prompt_search, lora, full, prompt_tuning, ia3, embedding_probe."""
    options: dict[str, Any]
    """The cell's resolved strategy options (grid values expanded; no seed, no n_train)."""
    n_train: int
    """Labelled examples the cell used (k for few-shot, 0 for zero-shot, the subset size for fine-tuning)."""
    seed: int
    variant: str
    """Display name of strategy + options, the same for every n_train and seed (e.g. "few_shot k=8 balanced")."""
    status: Literal["done", "failed"] = "done"
    error: str | None = None
    metric: str = "accuracy"
    value: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n_test: int = 0
    train_seconds: float = 0.0
    train_flops: float = 0.0
    peak_memory_bytes: int | None = None
    trainable_params: int | None = None
    artifact_bytes: int | None = None
    query_prompt_tokens: float = 0.0
    query_flops: float = 0.0
    query_seconds: float = 0.0
    artifact_dir: str | None = None
    """Folder of the saved `Adapted`, relative to the run directory (`adaptlab predict` loads it)."""
    report: dict[str, Any] = field(default_factory=dict)
    """The evaluator's classification report (per-class, confusion) or generation summary."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else from metrics.json worth keeping (search history, fit info)."""

    @property
    def family(self) -> Family:
        return family_of(self.strategy)

    @property
    def ok(self) -> bool:
        return self.status == "done" and not math.isnan(self.value)

    def served(self, scenario: Scenario) -> "CellRecord":
        """This record with ``query_seconds`` and ``query_flops`` as ``scenario``'s serving engine would see
        them (see the module docstring); the record itself when nothing changes. Idempotent."""
        query = (self.extra.get("cost") or {}).get("query") or {}
        cached = scenario.prefix_cache
        seconds = query.get("latency_p50_warm_s" if cached else "latency_p50_s")
        if not cached and not isinstance(seconds, (int, float)):
            seconds = query.get("latency_s")
        flops = query.get("flops_amortized" if cached else "flops")
        new = {k: float(v) for k, v in (("query_seconds", seconds), ("query_flops", flops))
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if all(getattr(self, k) == v for k, v in new.items()):
            return self
        return replace(self, **new)

    def query_cost(self, scenario: Scenario) -> float:
        """$ per query under ``scenario`` (measured seconds x hourly price)."""
        return self.query_seconds * scenario.price_per_hour / 3600.0

    def train_cost(self, scenario: Scenario) -> float:
        """$ of the one-off adaptation under ``scenario``."""
        return self.train_seconds * scenario.train_hour_price / 3600.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PredictionRow:
    """One test example's prediction in one cell (for paired tests and error samples)."""

    cell: str
    example_id: str
    input: str
    gold: str
    pred: str
    score: float
    """Per-example metric (1.0/0.0 correct for classification)."""
