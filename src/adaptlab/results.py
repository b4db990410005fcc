"""The shared shape of a compare run's results: one `CellRecord` per grid cell, and the `Scenario`.

`adaptlab.experiment.store` writes and reads these, `adaptlab.analysis` computes curves, crossovers and break-even
from them, `adaptlab.recommend` decides from them, and `adaptlab.report` draws them. Hand-made
records (in tests) exercise the analysis exactly as a real run does.

Cost conventions (per query = one test input answered):

* ``query_flops``: 2·N·(prompt + scored tokens) of one query served alone (`adaptlab.models.costs`).
* ``query_seconds``: measured median single-query latency (``latency_p50_s``; falls back to the
  batched seconds per query when the median was not measured). This is what a latency budget checks.
* ``latency_low``/``latency_high`` (`CellRecord.latency_interval`): a 95% interval of that median from the
  repeated single-query timings (``latency_p50_low_s``/``latency_p50_high_s``), when measured.
* Serving seconds per query (`CellRecord.serving_seconds`): what a deployment pays for, under
  ``Scenario.serving``: ``batched`` (default) = 1 / the measured batched throughput (queries per second at
  the best batch size the evaluation found, ``throughput_qps``); ``single`` = the single-query latency.
* Under a scenario with ``prefix_cache`` (the serving engine keeps prompt prefixes, as vLLM and
  llama.cpp servers do), `CellRecord.served` swaps in the warm latency (``latency_p50_warm_s``) and the
  FLOPs actually computed per query in the batched run (``flops_amortized``) where they were measured.
* ``train_seconds`` / ``train_flops``: the one-off cost of adapting (fine-tuning; for prompt
  strategies their fit: calibration passes, prompt search, embedding the demo pool).
* Labels: ``labels_used`` = training labels + every dev label the cell read (checkpoint selection, early
  stopping, calibration, prompt search); x ``Scenario.price_per_label`` they are a one-off cost.
* Money: serving seconds x the scenario's price per hour of the hardware the run used; for a model behind
  a priced API (a ``token_price`` stored with the cell, or the scenario's), the tokens the API reported x
  its $ per 1M input/output tokens instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from adaptlab.config import ConfigModel, Invalid
from adaptlab.models.prices import TokenPrice

Family = str
"""A strategy family: ``prompt`` or ``finetune`` (`adaptlab.strategies.FAMILIES`)."""


def arm_of(strategy: str, family: Family) -> str:
    """The registered arm of ``strategy`` (prompt, finetune, distill, cascade); ``family`` when it is not
    registered in this process."""
    import adaptlab.strategies as strategies  # registers the built-in strategies

    return strategies.arm_of(strategy) or family


def family_of(strategy: str) -> Family:
    """The registered family of ``strategy``; a strategy this process has not registered (a plugin's) is
    ``finetune`` only if no stored record says otherwise (records carry their family)."""
    import adaptlab.strategies as strategies  # registers the built-in strategies

    return strategies.family_of(strategy) or "finetune"


class Scenario(ConfigModel):
    """The user's situation the recommendation is for (every field optional, documented)."""

    key_aliases = {"queries": "queries_per_month", "volume": "queries_per_month", "price": "price_per_hour",
                   "latency": "latency_budget_s", "target": "accuracy_target", "labels": "labels_available"}

    queries_per_month: float = Field(100_000.0, ge=0)
    """Expected queries the adapted model will answer per month."""
    price_per_hour: float = Field(0.10, ge=0)
    """$ per hour of the hardware that ran the experiment (CPU-hour here; accelerator-hour on GPU)."""
    train_price_per_hour: float | None = Field(None, ge=0)
    """$ per hour for training if it differs (null: ``price_per_hour``)."""
    latency_budget_s: float | None = Field(None, ge=0)
    """Maximum acceptable single-query latency in seconds (null: no constraint)."""
    accuracy_target: float | None = Field(None, ge=0)
    """Metric value the team needs (same scale as the task metric, e.g. 0.85; null: best wins)."""
    labels_available: int | None = Field(None, ge=0)
    """Labelled examples on hand (null: as many as the run used)."""
    months: float = Field(12.0, ge=0)
    """Horizon for total cost of ownership (how long the adapted model will serve)."""
    task_changes_per_year: float = Field(0.0, ge=0)
    """How often the task definition changes (each change re-pays training; prompts are edited for free)."""
    prefix_cache: bool = False
    """The serving engine keeps prompt prefixes between queries (vLLM automatic prefix caching, llama.cpp
    ``cache_prompt``): a few-shot prompt's demonstrations are computed once, not per query. False (the default)
    prices every query computed in full."""
    price_per_label: float = Field(0.0, ge=0)
    """$ per labelled example (annotation cost); every label a variant used, dev labels included, is paid once."""
    serving: Literal["batched", "single"] = "batched"
    """How queries are served for cost: ``batched`` at the measured best throughput (how a deployment runs), or
    ``single`` (one request at a time: the single-query latency is the cost)."""
    token_price: TokenPrice | None = None
    """$ per 1M input/output tokens of an API model, overriding the price stored with the run (from the pinned
    table or the model's ``price``)."""

    model_config = ConfigDict(strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            raise Invalid("must be a number, not nan")
        return v

    @property
    def train_hour_price(self) -> float:
        return self.price_per_hour if self.train_price_per_hour is None else self.train_price_per_hour

    def replace(self, **changes: Any) -> Scenario:
        """A copy with ``changes`` (validated)."""
        return Scenario(**{**self.model_dump(), **changes})

    @classmethod
    def from_stored(cls, data: Mapping[str, Any] | None) -> Scenario:
        """The scenario a run stored (keys this version does not know are ignored)."""
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.model_fields})

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


@dataclass
class CellRecord:
    """One finished (or failed) grid cell: a strategy with its options, trained/prompted with
    ``n_train`` labelled examples and ``seed``, evaluated on the run's shared test examples."""

    key: str
    """Hash of the resolved cell config (identifies the cell for resume)."""
    strategy: str
    """Registry name: zero_shot, few_shot, calibrate, prompt_search, lora, full, prompt_tuning, ia3, embedding_probe,
    or a plugin's."""
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
    family: Family = ""
    """The strategy's family when the cell ran (empty: looked up in the registry)."""
    labels_used: int | None = None
    """Training labels + every dev label the cell read (None: not recorded, a run from before labels were
    counted; `labels` then falls back to ``n_train``)."""

    def __post_init__(self) -> None:
        if not self.family:
            self.family = family_of(self.strategy)

    @property
    def ok(self) -> bool:
        return self.status == "done" and not math.isnan(self.value)

    @property
    def arm(self) -> str:
        """Which option of a recommendation the cell is (prompt, finetune, distill, cascade): as recorded when
        it ran, else the registry's, else its family."""
        stored = self.extra.get("arm")
        return stored if isinstance(stored, str) and stored else arm_of(self.strategy, self.family)

    @property
    def labels(self) -> int:
        """Labels the cell used: ``labels_used``, or ``n_train`` when it was not recorded."""
        return self.n_train if self.labels_used is None else self.labels_used

    def query_info(self) -> dict[str, Any]:
        """The evaluator's per-query cost document (``metrics.json`` ``cost.query``; empty when absent)."""
        return dict((self.extra.get("cost") or {}).get("query") or {})

    def latency_interval(self) -> tuple[float, float]:
        """95% interval of the single-query median latency (``query_seconds`` twice when not measured)."""
        q = self.query_info()
        low, high = q.get("latency_p50_low_s"), q.get("latency_p50_high_s")
        if _finite(low) and _finite(high) and not self.extra.get("served_warm"):
            return float(low), float(high)
        if self.extra.get("served_warm"):
            wl, wh = q.get("latency_p50_warm_low_s"), q.get("latency_p50_warm_high_s")
            if _finite(wl) and _finite(wh):
                return float(wl), float(wh)
        return self.query_seconds, self.query_seconds

    def serving_seconds(self, scenario: Scenario) -> float:
        """Seconds of hardware per query as ``scenario`` serves it (module docstring)."""
        if scenario.serving == "batched":
            qps = self.query_info().get("throughput_qps")
            if _finite(qps) and qps > 0:
                return 1.0 / float(qps)
            seconds = self.query_info().get("latency_s")
            if _finite(seconds) and seconds > 0:
                return float(seconds)
        return self.query_seconds

    def token_price(self, scenario: Scenario) -> TokenPrice | None:
        """The API price that applies (the scenario's, else the one stored with the cell), None for a local
        model."""
        stored = self.query_info().get("token_price")
        if not isinstance(stored, Mapping):
            return None
        return scenario.token_price or TokenPrice(**{k: stored[k] for k in ("input_per_mtok", "output_per_mtok")})

    def served(self, scenario: Scenario) -> "CellRecord":
        """This record with ``query_seconds`` and ``query_flops`` as ``scenario``'s serving engine would see
        them (see the module docstring); the record itself when nothing changes. Idempotent."""
        query = (self.extra.get("cost") or {}).get("query") or {}
        cached = scenario.prefix_cache
        seconds = query.get("latency_p50_warm_s" if cached else "latency_p50_s")
        if not cached and not isinstance(seconds, (int, float)):
            seconds = query.get("latency_s")
        flops = query.get("flops_amortized" if cached else "flops")
        new: dict[str, Any] = {k: float(v) for k, v in (("query_seconds", seconds), ("query_flops", flops))
                               if _finite(v)}
        warm = cached and _finite(query.get("latency_p50_warm_s"))
        if all(getattr(self, k) == v for k, v in new.items()) and bool(self.extra.get("served_warm")) == warm:
            return self
        return replace(self, **new, extra={**self.extra, "served_warm": warm})

    def hour_price(self, scenario: Scenario) -> float:
        """$ per hour of the hardware serving this cell's model: its own ``hardware`` block where the experiment
        gave one, else the scenario's ``price_per_hour``."""
        hardware = self.query_info().get("hardware")
        price = hardware.get("price_per_hour") if isinstance(hardware, Mapping) else None
        return float(price) if _finite(price) else scenario.price_per_hour

    def query_cost(self, scenario: Scenario) -> float:
        """$ per query under ``scenario``: API-reported tokens x token price for a priced API model (plus the
        local seconds a cascade's own small model spends, ``hardware_seconds``), else serving seconds x the
        hourly price of the model's hardware."""
        price = self.token_price(scenario)
        q = self.query_info()
        if price is not None:
            tokens = price.cost(float(q.get("api_input_tokens") or 0.0), float(q.get("api_output_tokens") or 0.0))
            local = q.get("hardware_seconds")
            return tokens + (float(local) * self.hour_price(scenario) / 3600.0 if _finite(local) else 0.0)
        return self.serving_seconds(scenario) * self.hour_price(scenario) / 3600.0

    def train_cost(self, scenario: Scenario) -> float:
        """$ of the one-off adaptation under ``scenario``: compute seconds x the training price per hour (the
        scenario's ``train_price_per_hour``, else the model's hardware, else ``price_per_hour``), plus the API
        tokens the fit bought (a teacher labelling through a priced API). Labels are `label_cost`."""
        hourly = scenario.train_price_per_hour
        cost = self.train_seconds * (self.hour_price(scenario) if hourly is None else hourly) / 3600.0
        train = (self.extra.get("cost") or {}).get("train") or {}
        stored = train.get("token_price")
        if isinstance(stored, Mapping):
            price = scenario.token_price or TokenPrice(**{k: stored[k] for k in ("input_per_mtok", "output_per_mtok")})
            cost += price.cost(float(train.get("api_input_tokens") or 0.0), float(train.get("api_output_tokens") or 0.0))
        return cost

    def label_cost(self, scenario: Scenario) -> float:
        """$ of the labels the cell used under ``scenario`` (``labels x price_per_label``)."""
        return self.labels * scenario.price_per_label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
