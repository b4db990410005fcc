"""The experiment configuration: which task, model, strategies (with option grids), training sizes, seeds, test
sample and scenario a compare run covers.

An experiment YAML maps one to one onto `ExperimentConfig` (a `ConfigModel`); unknown keys and invalid values
raise a one-line `ConfigError` naming the file, the line and the key (with 'did you mean'). Plugins listed under
``plugins:`` are imported before the strategies are checked, so their strategies are valid names.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from adaptlab.config import ConfigModel, Invalid, KeyLines, line_of, load_package_file, load_yaml_model
from adaptlab.data.task import Task, builtin_task, load_task
from adaptlab.errors import AdaptlabError, ConfigError, closest
from adaptlab.evaluate import EvalSettings
from adaptlab.experiment.entries import StrategyEntry, TrainSize, check_seeds, check_sizes, entry_variants
from adaptlab.experiment.plugins import load_plugins
from adaptlab.lm.pool import DEFAULT_ROLE
from adaptlab.models.convert import DEFAULT_MODEL
from adaptlab.models.spec import ApiOptions, ModelSpec
from adaptlab.results import Scenario

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
BUILTIN_EXPERIMENTS = ("demo",)
SPLITS = ("dev", "test")
EXECUTORS = ("local", "ray")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class EvaluationConfig(ConfigModel):
    """How the evaluator measures each cell (``evaluation:``); the defaults are `adaptlab.evaluate.EvalSettings`'."""

    latency_sample: int = Field(EvalSettings.latency_sample, ge=0)
    """Single queries timed (cold, and warm where the backend keeps a prefix) for the median latency and its
    interval (0: none)."""
    latency_max_seconds: float | None = Field(EvalSettings.latency_max_seconds, gt=0)
    """Stop a latency series after this many seconds once it holds enough timings for an interval (6)."""
    throughput_batch_sizes: list[int] = Field(default_factory=lambda: list(EvalSettings.throughput_batch_sizes))
    """Batch sizes whose batched throughput (queries/second) is measured; the best prices serving."""
    throughput_sample: int = Field(EvalSettings.throughput_sample, ge=0)
    """Test examples timed at each batch size (0: no throughput measurement)."""

    @field_validator("throughput_batch_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise Invalid("batch sizes must be >= 1", hint="e.g. [1, 8, 32]")
        return v

    def settings(self) -> EvalSettings:
        """These settings as the evaluator takes them."""
        return EvalSettings(latency_sample=self.latency_sample, latency_max_seconds=self.latency_max_seconds,
                            throughput_batch_sizes=tuple(self.throughput_batch_sizes),
                            throughput_sample=self.throughput_sample)


class ExecutorConfig(ConfigModel):
    """How a run executes its cells (``executor:``; a bare ``executor: ray`` is short for ``{kind: ray}``).

    Never part of a cell key: a cell's results are the same whichever executor runs it, so a run started
    locally can be resumed on Ray and the other way round.
    """

    kind: Literal["local", "ray"] = "local"
    """``local``: one cell after another in this process. ``ray``: each cell a Ray task, up to ``workers`` at once;
    needs ``pip install 'adaptlab[ray]'``."""
    workers: int = 2
    """ray: cells run at once; a local cluster gets ``workers x cpus_per_cell`` CPUs."""
    address: str | None = None
    """ray: an existing cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); null starts a local one. Workers on
    other machines must see RUN_DIR at the same path (a shared file system) for the artifacts."""
    cpus_per_cell: float = 1
    """ray: CPUs each cell reserves (and its worker's OMP_NUM_THREADS)."""
    gpus_per_cell: float = 0
    """ray: GPUs each cell reserves (a fraction shares one GPU between cells)."""

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v < 1:
            raise Invalid("workers must be >= 1", hint="the number of cells run at once, e.g. 2")
        return v

    @field_validator("cpus_per_cell")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if not v > 0 or math.isinf(v):
            raise Invalid("cpus_per_cell must be > 0", hint="e.g. 1")
        return v

    @field_validator("gpus_per_cell")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if not v >= 0 or math.isinf(v):
            raise Invalid("gpus_per_cell must be >= 0", hint="0 for CPU cells, 1 for a GPU each, 0.5 to share one")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise Invalid("address is empty", hint="null starts a local Ray cluster")
        return v


class ExperimentConfig(ConfigModel):
    """A compare experiment. YAML keys map one to one onto these fields."""

    key_aliases = {"api_base": "base_url", "url": "base_url", "sizes": "train_sizes", "n_train": "train_sizes",
                   "seed": "seeds", "test_limit": "limit", "plugin": "plugins"}

    name: str
    """Short identifier (letters, digits, ``_.-``)."""
    task: str
    """A task YAML path (relative to the experiment file) or ``builtin:demo``."""
    plugins: list[str] = Field(default_factory=list)
    """Python modules or ``.py`` files (relative to the experiment file) that register more strategies."""
    model: str = DEFAULT_MODEL
    """Model name, HF id or local folder: the one model every cell adapts (or give ``models:``)."""
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    """Models by role (``{large: {name: gpt-4o-mini, backend: api, base_url: ...}, small: {name:
    smollm2-135m-instruct}}``), each priced its own way (``price`` per token, or ``hardware`` per hour); each
    strategy entry names its role with ``model:``. Empty: the single ``model:`` above (role ``default``)."""
    backend: Literal["hf", "api", "vllm", "llamacpp"] = "hf"
    """Prompt cells: local weights (``hf``), an OpenAI-compatible server (``api``), vLLM on a GPU (``vllm``) or a
    llama.cpp server this process starts for the model's GGUF (``llamacpp``)."""
    base_url: str | None = None
    """``api`` backend: http://HOST:PORT/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """``api`` backend: environment variable holding the API key."""
    api: ApiOptions = Field(default_factory=ApiOptions)
    """``api`` backend: per-request timeout, retries and concurrency (bounded: a dead server fails a cell after
    ``1 + max_retries`` attempts per request, each at most ``timeout_s``, plus backoff)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights dtype of the prompt LM."""
    device: str = "cpu"
    """Device of the prompt LM (cpu | cuda | auto)."""
    strategies: list[StrategyEntry]
    """The strategies compared, each with its option grid."""
    train_sizes: list[TrainSize] = Field(default_factory=lambda: [16, 64, 256, 1024])
    """Labelled training examples per cell (nested subsets: 16 within 64 within 256); ``all`` = every one."""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    """Seeds of every cell (subset, demonstrations, initialisation, data order)."""
    split: str = "test"
    """Split every cell is evaluated on (test or dev)."""
    limit: int | None = None
    """Evaluate a seeded sample of this many examples (the same sample for every cell)."""
    split_seed: int = 0
    """Seed of the dev carving and the test sample (fixed, so every cell sees the same examples)."""
    epochs: int = 3
    """Fine-tuning passes over the training subset (a strategy's ``options.epochs`` overrides)."""
    scenario: Scenario = Field(default_factory=Scenario)
    """The situation the recommendation is for: queries a month, prices, latency budget, accuracy target."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """How cells are run (in this process, or as Ray tasks); never part of a cell key."""
    evaluation: EvaluationConfig = Field(default_factory=lambda: EvaluationConfig())
    """How each cell's cost is measured (latency timings, throughput batch sizes); never part of a cell key."""
    source: Path | None = Field(default=None, exclude=True)
    """The YAML file (for errors; a relative task path resolves against its folder)."""

    _task: Any = PrivateAttr(default=None)
    _lines: KeyLines = PrivateAttr(default_factory=dict)
    _shown: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, data: Any) -> Any:
        """Plugins register their strategies before ``strategies`` is checked."""
        if isinstance(data, dict) and data.get("plugins"):
            plugins = data["plugins"]
            if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
                raise Invalid("plugins must be a list of module names or .py files", field="plugins")
            source = data.get("source")
            try:
                load_plugins(plugins, Path(source).parent if source else None)
            except AdaptlabError as exc:
                raise Invalid(exc.message, field="plugins", hint=exc.hint) from None
        return data

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, v: list[Any]) -> list[Any]:
        return check_sizes(v)  # type: ignore[return-value]

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            raise Invalid(f"seeds must be a list of integers, got {v!r}", hint="e.g. seeds: [0, 1, 2]")
        return check_seeds(v)

    @field_validator("strategies", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": s} if isinstance(s, str) else s for s in v]
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, v: Any) -> Any:
        """``small: smollm2-135m-instruct`` is short for ``small: {name: smollm2-135m-instruct}``."""
        if isinstance(v, dict):
            return {k: {"name": s} if isinstance(s, str) else s for k, s in v.items()}
        return v

    @field_validator("models")
    @classmethod
    def _roles(cls, v: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for role in v:
            if not _NAME.match(role):
                raise Invalid(f"invalid model role '{role}'", field=role, hint="use letters, digits, '_', '.' and '-'")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise Invalid(f"invalid experiment name '{v}'", hint="use letters, digits, '_', '.' and '-'")
        return v

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        if v not in SPLITS:
            raise Invalid(f"cannot evaluate on split '{v}'", hint="use test or dev")
        return v

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise Invalid("limit must be >= 1 (or null for every example)")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        if v < 1:
            raise Invalid("epochs must be >= 1")
        return v

    @field_validator("api", "scenario", "models", mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, (dict, ConfigModel)):
            raise Invalid("must be a mapping of keys", hint="e.g. {timeout_s: 30, max_retries: 2}")
        return v

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, v: Any) -> Any:
        if v is None:
            return ExecutorConfig()
        if isinstance(v, str):
            if v not in EXECUTORS:
                guess = closest(v, EXECUTORS)
                raise Invalid(f"unknown executor '{v}'", hint=f"did you mean '{guess}'?" if guess else "use local or ray")
            return {"kind": v}
        return v

    @model_validator(mode="after")
    def _one_model_form(self) -> ExperimentConfig:
        if self.models:
            fields = type(self).model_fields
            single = {k for k in ("model", "backend", "base_url", "dtype", "device")
                      if getattr(self, k) != fields[k].default}
            if single:
                key = sorted(single)[0]
                raise Invalid(f"'{key}' applies to the single model; with 'models:' give it in a model's entry",
                              field=key, hint="move it under models.ROLE, or drop models:")
        return self

    @model_validator(mode="after")
    def _validate_strategies(self) -> ExperimentConfig:
        if not self.strategies:
            raise Invalid("list at least one strategy", field="strategies", hint="e.g. [zero_shot, lora]")
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.strategies):
            self._check_role(entry.model, f"strategies.{i}.model", entry=True)
            try:
                found = entry_variants(entry, i, self.strategy_defaults())
            except ConfigError as exc:  # field is relative to the entry (options.KEY, train_sizes, ...)
                field = f"strategies.{i}" + (f".{exc.field}" if exc.field else "")
                raise Invalid(exc.message, field=field, hint=exc.hint) from None
            for var in found:
                for role in sorted(var.roles):
                    self._check_role(role, f"strategies.{i}.options")
            for label in {v.label for v in found}:
                if label in seen:
                    raise Invalid(f"entries {seen[label]} and {i} both produce the variant '{label}'",
                                  field=f"strategies.{i}", hint="give one of them a distinct `label`")
                seen[label] = i
        return self

    def _check_role(self, role: str | None, field: str, *, entry: bool = False) -> None:
        roles = self.roles
        if role is None:
            if entry and len(roles) > 1:
                raise Invalid("name the model this strategy adapts", field=field,
                              hint="model: one of " + ", ".join(roles))
            return
        if role not in roles:
            guess = closest(role, roles)
            hint = f"did you mean '{guess}'?" if guess else "models here: " + ", ".join(roles)
            if not self.models:
                hint = "list the models by role under models: (e.g. {large: ..., small: ...})"
            raise Invalid(f"unknown model role '{role}'", field=field, hint=hint)

    # -- behaviour --------------------------------------------------------------------------------

    @property
    def roles(self) -> list[str]:
        """The experiment's model roles (``default`` for the single ``model:``)."""
        return list(self.models) if self.models else [DEFAULT_ROLE]

    def role_of(self, index: int) -> str:
        """The role of the model strategy entry ``index`` adapts."""
        return self.strategies[index].model or self.roles[0]

    def model_specs(self) -> dict[str, ModelSpec]:
        """Every model by role."""
        return dict(self.models) if self.models else {DEFAULT_ROLE: self.model_spec()}

    def with_changes(self, **changes: Any) -> ExperimentConfig:
        """A copy with ``changes`` (command-line overrides), validated like the file's keys; the copy keeps the
        file's line numbers for messages."""
        data = {**self.model_dump(), "source": self.source, **changes}
        copy = ExperimentConfig(**data)
        copy._lines, copy._shown = self._lines, self._shown
        if "task" not in changes:
            copy._task = self._task
        return copy

    def strategy_defaults(self) -> dict[str, Any]:
        """Experiment-level settings strategies take as option defaults (see `StrategyInfo.experiment_defaults`)."""
        return {"epochs": self.epochs, "accuracy_target": self.scenario.accuracy_target}

    def model_spec(self, role: str | None = None) -> ModelSpec:
        """The model of ``role`` (default: the first), and how it is served."""
        if self.models:
            return self.models[role or self.roles[0]]
        return ModelSpec(name=self.model, backend=self.backend, base_url=self.base_url, api_key_env=self.api_key_env,
                         api=self.api, dtype=self.dtype, device=self.device)

    @property
    def file(self) -> Path | None:
        """The experiment file as the user named it (for messages)."""
        return self._shown or self.source

    def line_of(self, *path: str | int) -> int | None:
        """The YAML line of a key path (``line_of("strategies", 2, "options")``), when read from a file."""
        return line_of(self._lines, tuple(str(p) for p in path)) if self._lines else None

    def resolve_task(self) -> Task:
        """The task (loaded once): ``builtin:NAME`` or a YAML path relative to the experiment file."""
        if self._task is None:
            if self.task.startswith(BUILTIN_PREFIX):
                self._task = builtin_task(self.task[len(BUILTIN_PREFIX):])
            else:
                path = Path(self.task).expanduser()
                if not path.is_absolute() and self.source is not None:
                    path = self.source.parent / path
                if not path.is_file():
                    raise ConfigError(f"task file not found: {path}", file=self.file, line=self.line_of("task"),
                                      field="task", hint="a task path is relative to the experiment file")
                self._task = load_task(path)
        return self._task

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the store records as the run's experiment)."""
        data = self.model_dump(mode="json")
        data["source"] = str(self.source) if self.source else None
        return data


def load_experiment(path: str | Path) -> ExperimentConfig:
    """The experiment in a YAML file (see `ExperimentConfig`); also checks that its task loads."""
    path = Path(path)
    cfg, lines = load_yaml_model(path, ExperimentConfig, what="an experiment", keys="name, task, strategies, ...")
    cfg._lines, cfg._shown = lines, path
    cfg.resolve_task()
    return cfg


def builtin_experiment(name: str = "demo") -> ExperimentConfig:
    """An experiment shipped with the package (``adaptlab/<name>/experiment.yaml``)."""
    return load_package_file(name, name, BUILTIN_EXPERIMENTS, "experiment.yaml", load_experiment)
