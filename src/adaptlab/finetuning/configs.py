"""Fine-tuning configuration: one dataclass per method plus the shared training settings.

Every field has a documented default and is validated in ``__post_init__``; a bad value raises
`ConfigError` naming the field. `build_configs` maps a flat ``options`` dict (CLI ``--set key=value``
or an experiment YAML) onto the method config and `TrainArgs`, rejecting unknown keys with a
"did you mean" hint.

Each method config is also the strategy: ``LoraConfig(rank=4).fit(task, train, dev)`` returns an
`Adapted` (see `adaptlab.finetuning.adapted`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from adaptlab.errors import ConfigError, unknown_key_error

if TYPE_CHECKING:
    from adaptlab.adapted import Adapted
    from adaptlab.data import Example
    from adaptlab.models import LoadedModel
    from adaptlab.tasks import Task

DEFAULT_MODEL = "smollm2-135m-instruct"


def _check(cond: bool, name: str, message: str, hint: str | None = None) -> None:
    if not cond:
        raise ConfigError(message, field=name, hint=hint)


@dataclass
class TrainArgs:
    """Settings shared by every gradient-based method (the training recipe)."""

    epochs: int = 3
    """Passes over the training set (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides ``epochs``)."""
    batch_size: int = 8
    """Examples per micro-batch per process. Higher: faster, more memory."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size x grad_accum x processes)."""
    learning_rate: float | None = None
    """Peak learning rate; None uses the method's ``default_lr``."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent warming the learning rate up linearly from 0."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warmup: linear to 0, cosine to 0, or constant."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm (None: no clipping)."""
    max_length: int = 512
    """Tokens per training sequence; longer prompts are cut from the left so the answer survives."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, more tokens/second)."""
    eval_every: int = 0
    """Evaluate on the dev split every N optimizer steps (0: at the end of every epoch)."""
    eval_metric: bool = True
    """Also score the dev split with the task metric (through the LM scoring path), not only dev loss."""
    eval_limit: int | None = 200
    """Dev examples used at each evaluation, dev loss and dev metric alike (a seeded sample; None: all)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement (None: never stop early)."""
    keep_best: bool = True
    """Finish with the weights of the best evaluation instead of the last step."""
    save_every: int = 50
    """Write a resumable checkpoint every N optimizer steps (0: only at evaluations)."""
    keep_checkpoints: int = 1
    """How many resumable checkpoints to keep (the newest)."""
    seed: int = 0
    """Seeds python, numpy and torch, data order and adapter initialisation."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision through accelerate (bf16 works on CPU and recent GPUs; fp16 GPU only)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more compute."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu`` or ``cuda``; under ``accelerate launch`` accelerate decides."""
    progress: bool = True
    """Show a rich progress bar with loss and tokens/second (main process, terminals only)."""
    log_every: int = 10
    """Log the training loss every N optimizer steps."""
    oom_retries: int = 3
    """On GPU out-of-memory, halve the micro-batch (doubling accumulation: the same examples per
    optimizer step) and retry the step, at most this many times in a run (0: fail at once)."""

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", "epochs must be >= 1")
        _check(self.max_steps is None or self.max_steps >= 1, "max_steps", "max_steps must be >= 1")
        _check(self.batch_size >= 1, "batch_size", "batch_size must be >= 1")
        _check(self.grad_accum >= 1, "grad_accum", "grad_accum must be >= 1")
        _check(self.learning_rate is None or self.learning_rate > 0, "learning_rate", "learning_rate must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", "weight_decay must be >= 0")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", "warmup_ratio must be in [0, 1)")
        _check(self.schedule in ("linear", "cosine", "constant"), "schedule",
               f"unknown schedule {self.schedule!r}", "use linear, cosine or constant")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "max_grad_norm must be > 0")
        _check(self.max_length >= 8, "max_length", "max_length must be >= 8")
        _check(self.eval_every >= 0, "eval_every", "eval_every must be >= 0")
        _check(self.eval_limit is None or self.eval_limit >= 1, "eval_limit", "eval_limit must be >= 1")
        _check(self.early_stopping_patience is None or self.early_stopping_patience >= 1,
               "early_stopping_patience", "early_stopping_patience must be >= 1")
        _check(self.save_every >= 0, "save_every", "save_every must be >= 0")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", "keep_checkpoints must be >= 1")
        _check(self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision",
               f"unknown mixed_precision {self.mixed_precision!r}", "use no, bf16 or fp16")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
               f"unknown device {self.device!r}", "use auto, cpu or cuda")
        _check(self.log_every >= 1, "log_every", "log_every must be >= 1")
        _check(0 <= self.oom_retries <= 16, "oom_retries", "oom_retries must be in 0..16")


class _GradientMethod:
    """``fit`` for the methods trained by the recipe (LoRA, IA3, prompt tuning, full)."""

    name: ClassVar[str]
    default_lr: ClassVar[float]

    def fit(self, task: "Task", train: Sequence["Example"], dev: Sequence["Example"], *,
            model: "str | LoadedModel" = DEFAULT_MODEL, args: TrainArgs | None = None,
            out_dir: str | Path | None = None, resume: bool = False, prompt: Any = None,
            load_options: Mapping[str, Any] | None = None) -> "Adapted":
        """Fine-tune ``model`` on ``train`` (early stopping / best checkpoint on ``dev``).

        ``out_dir`` holds resumable checkpoints (a temporary folder when None); ``resume=True``
        continues from the newest checkpoint there. ``prompt`` (a `ZeroShotConfig` or its options)
        sets the prompt format trained on. ``load_options`` go to `adaptlab.models.load_model` when
        ``model`` is a name (``trust_remote_code``, ``allow_pickle``). Returns a `FinetunedAdapted`;
        a `LoadedModel` passed as ``model`` is copied, never modified.
        """
        from adaptlab.finetuning.methods import fit_gradient_method

        return fit_gradient_method(self, task, train, dev, model=model, args=args or TrainArgs(),
                                   out_dir=out_dir, resume=resume, prompt=prompt, load_options=load_options)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]


def _check_modules(value: Sequence[str] | str, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    mods = tuple(value)
    _check(len(mods) > 0 and all(isinstance(m, str) and m for m in mods), name,
           f"{name} must be a non-empty list of module names")
    return mods


@dataclass
class LoraConfig(_GradientMethod):
    """LoRA (Hu et al. 2021): trainable low-rank updates ``B @ A`` beside frozen linear layers."""

    name: ClassVar[str] = "lora"
    default_lr: ClassVar[float] = 1e-3

    rank: int = 8
    """Rank r of the update. Higher: more capacity and memory."""
    alpha: float = 16.0
    """Scale: the update is multiplied by alpha / rank."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names (suffixes of ``model.named_modules()``) or ``all-linear``; each must match."""

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "rank", "rank must be >= 1")
        _check(self.alpha > 0, "alpha", "alpha must be > 0")
        _check(0 <= self.dropout < 1, "dropout", "dropout must be in [0, 1)")
        self.target_modules = _check_modules(self.target_modules, "target_modules")


@dataclass
class IA3Config(_GradientMethod):
    """(IA)^3 (Liu et al. 2022): learned vectors that rescale keys, values and feed-forward activations."""

    name: ClassVar[str] = "ia3"
    default_lr: ClassVar[float] = 3e-3

    target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
    """Modules whose activations are rescaled; each must match a module of the model."""
    feedforward_modules: tuple[str, ...] = ("down_proj",)
    """Subset of ``target_modules`` treated as feed-forward (scaled on the input side)."""

    def __post_init__(self) -> None:
        self.target_modules = _check_modules(self.target_modules, "target_modules")
        self.feedforward_modules = _check_modules(self.feedforward_modules, "feedforward_modules")
        extra = [m for m in self.feedforward_modules if m not in self.target_modules]
        _check(not extra, "feedforward_modules",
               f"feedforward module '{extra[0] if extra else ''}' is not in target_modules")


@dataclass
class PromptTuningConfig(_GradientMethod):
    """Prompt tuning (Lester et al. 2021): trainable soft-prompt embeddings before every input."""

    name: ClassVar[str] = "prompt_tuning"
    default_lr: ClassVar[float] = 3e-2

    num_virtual_tokens: int = 16
    """Length of the soft prompt. Every query costs this many extra tokens."""
    init: Literal["instruction", "random", "vocab"] = "instruction"
    """Initialise from the embeddings of the task instruction (repeated), random vocabulary rows, or
    ``random`` normal noise."""

    def __post_init__(self) -> None:
        _check(self.num_virtual_tokens >= 1, "num_virtual_tokens", "num_virtual_tokens must be >= 1")
        _check(self.init in ("instruction", "random", "vocab"), "init",
               f"unknown init {self.init!r}", "use instruction, vocab or random")


@dataclass
class FullConfig(_GradientMethod):
    """Full fine-tuning: every weight trains (the most memory and the biggest artifact)."""

    name: ClassVar[str] = "full"
    default_lr: ClassVar[float] = 5e-5

    freeze_embeddings: bool = False
    """Keep the (tied) token embeddings frozen: less optimizer memory for large vocabularies."""


@dataclass
class EmbeddingProbeConfig:
    """Sentence embeddings (MiniLM) + logistic regression: the cheap classic baseline.

    Classification only; trains in seconds on CPU and never touches the LM.
    """

    name: ClassVar[str] = "embedding_probe"

    embedder: str = "minilm-l6"
    """Sentence embedder name (`adaptlab.embeddings.load_embedder`)."""
    C: float = 1.0
    """Inverse L2 regularisation strength of the logistic regression."""
    max_iter: int = 2000
    """Solver iterations."""
    class_weight: Literal["balanced"] | None = None
    """``balanced`` reweights classes inversely to their frequency."""
    include_instruction: bool = False
    """Embed ``instruction + input`` instead of the input alone."""

    def __post_init__(self) -> None:
        _check(self.C > 0, "C", "C must be > 0")
        _check(self.max_iter >= 1, "max_iter", "max_iter must be >= 1")
        _check(self.class_weight in (None, "balanced"), "class_weight", "class_weight must be balanced or null")

    def fit(self, task: "Task", train: Sequence["Example"], dev: Sequence["Example"] = (), *,
            seed: int = 0, embedder: Any = None, **_: Any) -> "Adapted":
        """Embed the training inputs and fit the classifier; ``dev`` is scored for the log only.

        ``embedder`` (an `adaptlab.embeddings.Embedder`) skips loading one by name.
        """
        from adaptlab.finetuning.embedding_probe import fit_probe

        return fit_probe(self, task, train, dev, seed=seed, embedder=embedder)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **dataclasses.asdict(self)}


MethodConfig = LoraConfig | IA3Config | PromptTuningConfig | FullConfig | EmbeddingProbeConfig
METHODS: dict[str, type] = {c.name: c for c in (LoraConfig, IA3Config, PromptTuningConfig, FullConfig,
                                                 EmbeddingProbeConfig)}


def _typed(value: Any, f: dataclasses.Field, owner: str) -> Any:
    """A non-string option value (from YAML) checked against the field's annotation."""
    typ = str(f.type)
    base = typ.split("|")[0].strip()
    if value is None:
        ok = "None" in typ
    elif base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif base.startswith("tuple"):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:  # str and Literal[...] fields: the dataclass validates the value itself
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"invalid value {value!r} for {owner} option '{f.name}' ({typ})", field=f.name)
    return value


def _coerce(value: Any, f: dataclasses.Field, owner: str) -> Any:
    """Convert CLI strings ("8", "true", "q_proj,v_proj", "null") to the field's type; check other values."""
    if not isinstance(value, str):
        return _typed(value, f, owner)
    typ = str(f.type)
    low = value.strip().lower()
    if low in ("none", "null") and "None" in typ:
        return None
    try:
        if "tuple" in typ:
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if typ.startswith("bool"):
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ.startswith("int"):
            return int(value)
        if typ.startswith("float"):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
    except ValueError:
        raise ConfigError(f"invalid value {value!r} for {owner} option '{f.name}' ({typ})",
                          field=f.name) from None
    return value


def build_configs(method: str, options: Mapping[str, Any] | None = None) -> tuple[Any, TrainArgs]:
    """The method config and `TrainArgs` from a method name and flat options (unknown keys fail)."""
    if method not in METHODS:
        err = unknown_key_error(method, METHODS, what="fine-tuning method")
        err.field = "method"
        raise err
    cls = METHODS[method]
    m_fields = {f.name: f for f in fields(cls)}
    t_fields = {f.name: f for f in fields(TrainArgs)}
    m_kwargs: dict[str, Any] = {}
    t_kwargs: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in m_fields:
            m_kwargs[key] = _coerce(value, m_fields[key], method)
        elif key in t_fields and cls is not EmbeddingProbeConfig:
            t_kwargs[key] = _coerce(value, t_fields[key], "training")
        elif key == "seed":
            t_kwargs[key] = _coerce(value, t_fields["seed"], "training")
        else:
            valid = set(m_fields) | (set(t_fields) if cls is not EmbeddingProbeConfig else {"seed"})
            raise unknown_key_error(key, valid, what=f"{method} option")
    return cls(**m_kwargs), TrainArgs(**t_kwargs)


def method_fields(method: str) -> list[str]:
    """Option names a method accepts (its own fields, then the training fields)."""
    cls = METHODS[method]
    names = [f.name for f in fields(cls)]
    if cls is not EmbeddingProbeConfig:
        names += [f.name for f in fields(TrainArgs)]
    return names


__all__ = ["TrainArgs", "LoraConfig", "IA3Config", "PromptTuningConfig", "FullConfig", "EmbeddingProbeConfig",
           "METHODS", "build_configs", "method_fields", "DEFAULT_MODEL"]
