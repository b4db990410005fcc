"""The experiment configuration: which task, model, strategies (with option grids), training sizes,
seeds, test sample and scenario a compare run covers.

An experiment YAML maps one to one onto `ExperimentConfig` (pydantic); unknown keys and invalid
values raise a one-line `ConfigError` naming the file, the line and the key (with 'did you mean').
Strategy options are validated up front by parsing every grid variant with its strategy's config
class, so a typo fails before anything runs.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from adaptlab.errors import ConfigError, closest, unknown_key_error
from adaptlab.results import FINETUNE_METHODS, PROMPT_STRATEGIES, Scenario
from adaptlab.tasks import _VALIDATING, _Invalid, _line_of, config_error, load_builtin, load_yaml_model

if TYPE_CHECKING:
    from adaptlab.tasks import Task

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
BUILTIN_PREFIX = "builtin:"
BUILTIN_EXPERIMENTS = ("demo",)
SPLITS = ("dev", "test")
DTYPES = ("float32", "bfloat16")
RESERVED_OPTIONS = ("seed",)
"""Options set by the runner per cell (the grid's ``seeds``), never in ``options``."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

TrainSize = int | Literal["all"]


def all_strategies() -> list[str]:
    """Every strategy name an experiment accepts: registered prompt strategies and fine-tuning methods."""
    from adaptlab.finetuning.configs import METHODS
    from adaptlab.prompting.strategies import list_strategies

    return sorted(set(list_strategies()) | set(METHODS))


def _check_sizes(sizes: list[Any] | None) -> list[Any] | None:
    if sizes is None:
        return None
    if not sizes:
        raise _Invalid("needs at least one size", hint="e.g. [16, 64, 256, all]")
    for s in sizes:
        if s != "all" and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
            raise _Invalid(f"invalid training size {s!r}", hint="use positive integers or 'all'")
    return list(dict.fromkeys(sizes))


def _check_seeds(seeds: list[Any] | None) -> list[Any] | None:
    if seeds is None:
        return None
    if not seeds:
        raise _Invalid("needs at least one seed", hint="e.g. [0, 1, 2]")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise _Invalid("seeds must be integers")
    if len(set(seeds)) != len(seeds):
        raise _Invalid("seeds repeat")
    return seeds


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class StrategyEntry(_Base):
    """One entry of ``strategies:``; a bare name (``- zero_shot``) is short for ``{name: zero_shot}``."""

    name: str
    """A prompt strategy (zero_shot, few_shot, calibrate, prompt_search) or a fine-tuning method
    (lora, full, prompt_tuning, ia3, embedding_probe)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The strategy's options; a list value expands into a grid (``{k: [4, 8]}``: two variants). An
    option whose own type is a list (``content_free``, ``target_modules``) takes a list of lists to grid."""
    train_sizes: list[TrainSize] | None = None
    """Override the experiment's ``train_sizes`` (fine-tuning, kNN few-shot and prompt search)."""
    seeds: list[int] | None = None
    """Override the experiment's ``seeds``."""
    label: str | None = None
    """Display name prefix (default: the strategy name followed by its options)."""

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, v: list[Any] | None) -> list[Any] | None:
        return _check_sizes(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[Any] | None) -> list[Any] | None:
        return _check_seeds(v)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        valid = all_strategies()
        if v not in valid:
            guess = closest(v, valid)
            raise _Invalid(f"unknown strategy '{v}'",
                           hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(valid))
        return v

    @field_validator("options")
    @classmethod
    def _no_reserved(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in RESERVED_OPTIONS:
                raise _Invalid(f"option '{key}' is set per cell by the experiment", field=key,
                               hint="list the seeds under `seeds:` (experiment or strategy entry)")
        return v

    @property
    def family(self) -> str:
        return "prompt" if self.name in PROMPT_STRATEGIES else "finetune"


EXECUTORS = ("local", "ray")


class ExecutorConfig(_Base):
    """How a run executes its cells (``executor:``; a bare ``executor: ray`` is short for ``{kind: ray}``).

    Never part of a cell key: a cell's results are the same whichever executor runs it, so a run
    started locally can be resumed on Ray and the other way round.
    """

    kind: Literal["local", "ray"] = "local"
    """``local``: one cell after another in this process. ``ray``: each cell a Ray task, up to
    ``workers`` at once (`adaptlab.experiment.executors`); needs ``pip install 'adaptlab[ray]'``."""
    workers: int = 2
    """ray: cells run at once; a local cluster gets ``workers x cpus_per_cell`` CPUs."""
    address: str | None = None
    """ray: an existing cluster (``auto``, ``HOST:6379``, ``ray://HOST:10001``); null starts a local one.
    Workers on other machines must see RUN_DIR at the same path (a shared file system) for the artifacts."""
    cpus_per_cell: float = 1
    """ray: CPUs each cell reserves (and its worker's OMP_NUM_THREADS)."""
    gpus_per_cell: float = 0
    """ray: GPUs each cell reserves (a fraction shares one GPU between cells)."""

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v < 1:
            raise _Invalid("workers must be >= 1", hint="the number of cells run at once, e.g. 2")
        return v

    @field_validator("cpus_per_cell")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if not v > 0 or math.isinf(v):
            raise _Invalid("cpus_per_cell must be > 0", hint="e.g. 1")
        return v

    @field_validator("gpus_per_cell")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if not v >= 0 or math.isinf(v):
            raise _Invalid("gpus_per_cell must be >= 0", hint="0 for CPU cells, 1 for a GPU each, 0.5 to share one")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise _Invalid("address is empty", hint="null starts a local Ray cluster")
        return v


class ApiOptions(_Base):
    """``api:`` how hard the ``api`` backend tries each request (`adaptlab.lm.api.APIConfig`); a
    prompt cell whose requests still fail is recorded as failed and the run goes on."""

    timeout_s: float = 60.0
    """Per-request timeout (connect, read, write) in seconds."""
    max_retries: int = 3
    """Retries after the first attempt (connection errors, timeouts, malformed JSON, 429, 5xx), 0..20."""
    concurrency: int = 4
    """Requests in flight at once."""

    @field_validator("timeout_s")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0 < v <= 3600:
            raise _Invalid("timeout_s must be in (0, 3600] seconds", hint="e.g. 60")
        return v

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if not 0 <= v <= 20:
            raise _Invalid("max_retries must be in 0..20", hint="e.g. 3")
        return v

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int) -> int:
        if v < 1:
            raise _Invalid("concurrency must be >= 1", hint="e.g. 4")
        return v


class ExperimentConfig(_Base):
    """A compare experiment. YAML keys map one to one onto these fields."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    """Short identifier (letters, digits, ``_.-``)."""
    task: str
    """A task YAML path (relative to the experiment file) or ``builtin:demo``."""
    model: str = DEFAULT_MODEL
    """Model name, HF id or local folder (every cell adapts this model)."""
    backend: Literal["hf", "api"] = "hf"
    """Prompt cells: local weights (``hf``) or an OpenAI-compatible server (``api``)."""
    base_url: str | None = None
    """``api`` backend: http://HOST:PORT/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """``api`` backend: environment variable holding the API key."""
    api: ApiOptions = Field(default_factory=ApiOptions)
    """``api`` backend: per-request timeout, retries and concurrency (bounded: a dead server fails a
    cell after ``1 + max_retries`` attempts per request, each at most ``timeout_s``, plus backoff)."""
    dtype: str = "float32"
    """Weights dtype of the prompt LM (float32 | bfloat16)."""
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
    """The situation the recommendation is for (`adaptlab.results.Scenario`)."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """How cells are run (in this process, or as Ray tasks); never part of a cell key."""
    source: Path | None = Field(default=None, exclude=True)
    """The YAML file (for errors; a relative task path resolves against its folder)."""

    _task: Any = PrivateAttr(default=None)
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)
    _shown: Path | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        if _VALIDATING.get():
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise experiment_error(exc, file=data.get("source")) from None
        finally:
            _VALIDATING.reset(token)

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, v: list[Any]) -> list[Any]:
        return _check_sizes(v)  # type: ignore[return-value]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[Any]) -> list[Any]:
        return _check_seeds(v)  # type: ignore[return-value]

    @field_validator("strategies", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": s} if isinstance(s, str) else s for s in v]
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise _Invalid(f"invalid experiment name '{v}'", hint="use letters, digits, '_', '.' and '-'")
        return v

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        if v not in SPLITS:
            raise _Invalid(f"cannot evaluate on split '{v}'", hint="use test or dev")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in DTYPES:
            guess = closest(v, DTYPES)
            raise _Invalid(f"unknown dtype '{v}'", hint=f"did you mean '{guess}'?" if guess else "use float32")
        return v

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise _Invalid("limit must be >= 1 (or null for every example)")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        if v < 1:
            raise _Invalid("epochs must be >= 1")
        return v

    @field_validator("api", mode="before")
    @classmethod
    def _api(cls, v: Any) -> Any:
        if v is None:
            return ApiOptions()
        if not isinstance(v, (dict, ApiOptions)):
            raise _Invalid("api must be a mapping of keys", hint="e.g. {timeout_s: 30, max_retries: 2}")
        return v

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, v: Any) -> Any:
        if v is None:
            return ExecutorConfig()
        if isinstance(v, str):
            if v not in EXECUTORS:
                guess = closest(v, EXECUTORS)
                raise _Invalid(f"unknown executor '{v}'",
                               hint=f"did you mean '{guess}'?" if guess else "use local or ray")
            return {"kind": v}
        return v

    @field_validator("scenario", mode="before")
    @classmethod
    def _scenario(cls, v: Any) -> Any:
        if v is None:
            return Scenario()
        if isinstance(v, Scenario):
            return v
        if not isinstance(v, dict):
            raise _Invalid("scenario must be a mapping of keys", hint="e.g. {queries_per_month: 100000}")
        valid = [f.name for f in dc_fields(Scenario)]
        for key, value in v.items():
            if key not in valid:
                guess = closest(str(key), valid)
                raise _Invalid(f"unknown key '{key}'", field=str(key),
                               hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(valid))
            if key == "prefix_cache":
                if not isinstance(value, bool):
                    raise _Invalid(f"must be true or false, got {value!r}", field=str(key))
            elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                        or math.isnan(value)):
                raise _Invalid(f"must be a number, got {value!r}", field=str(key))
        try:
            return Scenario(**v)
        except ValueError as exc:
            text = str(exc)
            key = text.split()[0].removeprefix("scenario.") if text.startswith("scenario.") else None
            raise _Invalid(text.removeprefix(f"scenario.{key} ") if key else text, field=key) from None

    @model_validator(mode="after")
    def _validate_strategies(self) -> ExperimentConfig:
        if not self.strategies:
            raise _Invalid("list at least one strategy", field="strategies", hint="e.g. [zero_shot, lora]")
        from adaptlab.experiment.grid import variants

        seen: dict[str, int] = {}
        for i in range(len(self.strategies)):
            try:
                found = variants(self, i)
            except ConfigError as exc:  # field is relative to the entry (options.KEY, train_sizes, ...)
                field = f"strategies.{i}" + (f".{exc.field}" if exc.field else "")
                raise _Invalid(exc.message, field=field, hint=exc.hint) from None
            for label in {v.label for v in found}:
                if label in seen:
                    raise _Invalid(f"entries {seen[label]} and {i} both produce the variant '{label}'",
                                   field=f"strategies.{i}", hint="give one of them a distinct `label`")
                seen[label] = i
        return self

    # -- behaviour --------------------------------------------------------------------------------

    @property
    def file(self) -> Path | None:
        """The experiment file as the user named it (for messages)."""
        return self._shown or self.source

    def line_of(self, *path: str | int) -> int | None:
        """The YAML line of a key path (``line_of("strategies", 2, "options")``), when read from a file."""
        return _line_of(self._lines, tuple(str(p) for p in path)) if self._lines else None

    def resolve_task(self) -> Task:
        """The task (loaded once): ``builtin:NAME`` or a YAML path relative to the experiment file."""
        if self._task is None:
            from adaptlab.tasks import builtin_task, load_task

            if self.task.startswith(BUILTIN_PREFIX):
                self._task = builtin_task(self.task[len(BUILTIN_PREFIX):])
            else:
                path = Path(self.task).expanduser()
                if not path.is_absolute() and self.source is not None:
                    path = self.source.parent / path
                if not path.is_file():
                    raise ConfigError(f"task file not found: {path}", file=self.file,
                                      line=self.line_of("task"), field="task",
                                      hint="a task path is relative to the experiment file")
                self._task = load_task(path)
        return self._task

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the store records as the run's experiment)."""
        data = self.model_dump(mode="json")
        data["scenario"] = self.scenario.to_dict()
        data["source"] = str(self.source) if self.source else None
        return data


def experiment_error(exc: ValidationError, *, file: str | Path | None = None,
                     lines: dict[tuple[str, ...], int] | None = None) -> ConfigError:
    """One ConfigError from pydantic's errors; unknown keys name the closest valid key of their level."""
    errs = exc.errors()
    extra = next((e for e in errs if e["type"] == "extra_forbidden"), None)
    if extra is not None:
        loc = tuple(str(p) for p in extra["loc"])
        model: type[BaseModel] = ExperimentConfig
        if len(loc) > 1 and loc[0] == "strategies":
            model = StrategyEntry
        elif len(loc) > 1 and loc[0] == "executor":
            model = ExecutorConfig
        elif len(loc) > 1 and loc[0] == "api":
            model = ApiOptions
        valid = set(model.model_fields) - {"source"}
        return unknown_key_error(loc[-1], valid, file=file, line=_line_of(lines or {}, loc))
    return config_error(exc, ExperimentConfig, file=file, lines=lines)


def load_experiment(path: str | Path) -> ExperimentConfig:
    """The experiment in a YAML file (see `ExperimentConfig`); also checks that its task loads."""
    path = Path(path)
    cfg, lines = load_yaml_model(path, ExperimentConfig, "an experiment", "name, task, strategies, ...",
                                 error=experiment_error)
    cfg._lines, cfg._shown = lines, path
    cfg.resolve_task()
    return cfg


def builtin_experiment(name: str = "demo") -> ExperimentConfig:
    """An experiment shipped with the package (``adaptlab/<name>/experiment.yaml``)."""
    return load_builtin(name, BUILTIN_EXPERIMENTS, "experiment.yaml", load_experiment)


__all__ = ["ExperimentConfig", "ApiOptions", "ExecutorConfig", "StrategyEntry", "load_experiment",
           "builtin_experiment", "all_strategies", "FINETUNE_METHODS", "PROMPT_STRATEGIES"]
