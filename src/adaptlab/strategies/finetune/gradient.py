"""What the gradient-trained methods share (LoRA, IA3, prompt tuning, full): their options (`GradientConfig`:
the recipe's settings plus the prompt format trained on), the training data in that prompt format, and the
fit itself. A method is one file: a `GradientConfig` subclass that builds its trainable model.

Training uses the zero-shot prompt of the prompt strategies (same instruction, input template and
verbalizers): classification trains ``context -> " " + verbalizer``, generation ``context -> " " + reference +
EOS``; the loss covers the answer tokens only. Prediction goes through the same prompt, so fine-tuning and
prompting differ only in how the model was adapted. The prompt format defaults to ``plain`` here (prompt
strategies default to ``auto``, the chat template when the model has one): the fine-tune learns its own format,
and plain keeps the training sequences short.

Labels: the artifact counts the training examples and, when the dev sample chose the checkpoint (``keep_best``)
or could stop training early, that dev sample (`dev_labels_used`); ``select_on_dev: false`` reads no dev example.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from adaptlab.config import Invalid
from adaptlab.data.example import seeded_sample
from adaptlab.errors import ConfigError, DataError
from adaptlab.metrics import compute
from adaptlab.models.costs import count_params
from adaptlab.strategies.base import FitContext, NotMainProcess, StrategyConfig
from adaptlab.strategies.finetune.adapted import FinetunedAdapted, dev_selects
from adaptlab.strategies.finetune.batching import Pair, encode_pairs
from adaptlab.strategies.finetune.recipe import Recipe, RecipeSetup
from adaptlab.strategies.finetune.train_args import TrainArgs, TrainSettings
from adaptlab.strategies.prompt.common import new_adapted
from adaptlab.strategies.prompt.format import continuation, resolve_style
from adaptlab.strategies.prompt.zero_shot import ZeroShotConfig

if TYPE_CHECKING:
    import torch

    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.strategies.prompt.artifact import PromptAdapted

log = logging.getLogger(__name__)

PROMPT_KEYS = tuple(k for k in ZeroShotConfig.model_fields if k != "calibrate")


class GradientConfig(StrategyConfig, TrainSettings):
    """Options of a gradient-trained method: the training recipe's settings, the prompt format, merge."""

    default_lr: ClassVar[float] = 1e-3
    """Learning rate when ``learning_rate`` is not given."""
    full_weights: ClassVar[bool] = False
    """Every weight trains (FLOPs formula; the artifact holds the whole model)."""
    mergeable: ClassVar[bool] = True
    """The adapter can be folded into the base weights (``merge``)."""

    prompt: dict[str, Any] = Field(default_factory=dict)
    """The prompt format trained on and predicted with: ``zero_shot`` options (``format``, ``instruction``,
    ``answer_prefix``, ...); default: the zero-shot defaults, except ``format: plain`` (the fine-tune learns its
    own format; plain keeps sequences short; ``auto`` picks the chat template when the tokenizer has one)."""
    merge: bool = False
    """Also save the adapter folded into the base weights (``merged/``: a plain model folder that loads without
    peft)."""

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("calibrate"):
            raise Invalid("calibration does not apply to fine-tuned models", field="calibrate")
        ZeroShotConfig.parse(v)  # unknown keys and bad values fail here, naming prompt.KEY
        return v

    @field_validator("merge")
    @classmethod
    def _merge(cls, v: bool) -> bool:
        if v and not cls.mergeable:
            raise Invalid(f"{cls.strategy_name} cannot be merged into the model weights", hint="save without merge")
        return v

    def train_args(self, seed: int, *, progress: bool) -> TrainArgs:
        """The recipe's arguments: these settings, the seed, and whether to show progress."""
        fields = {k: getattr(self, k) for k in TrainSettings.model_fields}
        return TrainArgs(**{**fields, "seed": seed, "progress": self.progress and progress})

    def method_options(self) -> dict[str, Any]:
        """The method's own options (not the recipe's), as the artifact records them."""
        skip = set(TrainSettings.model_fields) | {"prompt", "merge"}
        return {"method": self.strategy_name, **{k: v for k, v in self.to_dict().items() if k not in skip}}

    def build(self, base: torch.nn.Module, *, instruction_ids: Sequence[int], seed: int) -> torch.nn.Module:
        """The trainable model around ``base`` (``base`` is modified: it is the fit's own copy)."""
        raise NotImplementedError

    @staticmethod
    def scoring_model(model: Any) -> Any:
        """The trained model as the scoring LM runs it (prompt tuning puts its soft prompt in front)."""
        return model

    def learns_labels(self) -> bool:
        return True

    def virtual_tokens(self) -> int:
        """Tokens the method adds in front of every input (prompt tuning)."""
        return 0

    def windowed_loss(self) -> bool:
        """Whether the loss may run the output layer on the answer positions only."""
        return True

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> FinetunedAdapted:
        return fit_gradient_method(self, task, train, dev, ctx)


FINETUNE_PROMPT_FORMAT = "plain"
"""The prompt format a fine-tune trains on unless its ``prompt`` options say otherwise (not the prompt strategies'
``auto``): the fine-tune learns its own format, and plain keeps sequences short."""


def zero_shot_prompt(task: Task, model_name: str, options: dict[str, Any] | None = None,
                     tokenizer: Any = None) -> PromptAdapted:
    """The zero-shot `PromptAdapted` whose format fine-tuning trains on and predicts with (``format`` defaults to
    plain; ``auto`` resolves with ``tokenizer``)."""
    cfg = ZeroShotConfig.parse({"format": FINETUNE_PROMPT_FORMAT, **(options or {})})
    if cfg.calibrate:
        raise ConfigError("calibration does not apply to fine-tuned models", field="prompt.calibrate")
    return new_adapted(task, model_name, cfg.prompt_format(task, style=resolve_style(cfg.format, tokenizer)), cfg)


def dev_labels_used(args: TrainSettings, n_dev_sample: int) -> int:
    """Dev labels that influenced the weights a fit returns: the dev sample when it chose the checkpoint
    (``keep_best``) or could stop training early, else 0 (``select_on_dev: false``, or evaluations only logged)."""
    return n_dev_sample if dev_selects(args.model_dump()) else 0


def training_pairs(prompt: PromptAdapted, task: Task, examples: Sequence[Example], tokenizer: Any = None) -> list[Pair]:
    """(context, answer) text pairs in the prompt's format; the answer is what the evaluator scores."""
    pairs = []
    for ex in examples:
        ctx = prompt.context(task.render_input(ex), [], tokenizer)
        if task.type == "classification":
            label = task.label_of(ex)
            if label not in task.labels:
                raise DataError(f"example {ex.id} has label '{label}' outside the task labels",
                                file=ex.source, line=ex.line, field=task.label_field)
            answer = task.labels[label]
        else:
            answer = task.target_of(ex)
        pairs.append(Pair(ctx, continuation(ctx, answer)))
    return pairs


def check_target_modules(model: torch.nn.Module, targets: Sequence[str], *, field: str, method: str) -> None:
    """ConfigError naming the first target that matches no module (peft's suffix rule)."""
    if list(targets) == ["all-linear"]:
        return
    names = [n for n, _ in model.named_modules() if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and type(m).__name__ == "Linear"})
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ConfigError(f"{method} target module '{target}' matches no module of the model",
                              field=field, hint="linear layers here: " + ", ".join(leaves))


def split_modules(value: Any) -> Any:
    """``"q_proj, v_proj"`` -> ``("q_proj", "v_proj")``; lists become tuples (for ``target_modules``-like options)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and (not value or not all(isinstance(m, str) and m for m in value)):
        raise Invalid("must be a non-empty list of module names")
    return value


def dev_scorer(prompt: PromptAdapted, task: Task, dev: Sequence[Example], tokenizer: Any,
               scoring_model: Any) -> Any:
    """A function scoring a model on ``dev`` with the task metric through HFLM (the evaluation path)."""
    from adaptlab.lm.hf import HFLM

    refs = [task.label_of(ex) if task.type == "classification" else task.target_of(ex) for ex in dev]

    def score(model: torch.nn.Module) -> float:
        preds = prompt.bound(HFLM(scoring_model(model), tokenizer, name=prompt.model_name)).predict(dev)
        return compute(task.metric, [p.pred for p in preds], refs)

    return score


def fit_gradient_method(cfg: GradientConfig, task: Task, train: Sequence[Example], dev: Sequence[Example],
                        ctx: FitContext) -> FinetunedAdapted:
    """Fine-tune ``ctx``'s model with ``cfg`` on ``train`` and return the `FinetunedAdapted` (model in memory)."""
    if not train:
        raise DataError("no training examples", field="n_train")
    args = cfg.train_args(ctx.seed, progress=ctx.progress)
    loaded = ctx.trainable()  # on CPU; accelerate moves it to the device
    tok = loaded.tokenizer
    zs = zero_shot_prompt(task, loaded.name, cfg.prompt, tok)
    generation = task.type == "generation"
    train_enc = encode_pairs(tok, training_pairs(zs, task, train, tok), max_length=args.max_length, eos=generation)
    n_params = count_params(loaded.model)
    instruction_ids = tok(zs.fmt.instruction or task.name, add_special_tokens=False)["input_ids"]
    import torch

    torch.manual_seed(args.seed)
    net = cfg.build(loaded.model, instruction_ids=instruction_ids, seed=args.seed)
    dev_eval = seeded_sample(list(dev), args.eval_limit, args.seed) if args.select_on_dev else []
    dev_enc = encode_pairs(tok, training_pairs(zs, task, dev_eval, tok), max_length=args.max_length, eos=generation)
    scorer = dev_scorer(zs, task, dev_eval, tok, cfg.scoring_model) if args.eval_metric and dev_eval else None
    work = Path(ctx.work_dir) if ctx.work_dir is not None else Path(tempfile.mkdtemp(prefix="adaptlab-ft-"))
    setup = RecipeSetup(lr=args.learning_rate or cfg.default_lr,
                        pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                        work_dir=work, full=cfg.full_weights, dev_scorer=scorer, resume=ctx.resume,
                        extra_tokens_per_example=cfg.virtual_tokens(), n_params=n_params,
                        windowed_loss=cfg.windowed_loss())
    recipe = Recipe(net, train_enc, dev_enc, args=args, setup=setup)
    result = recipe.run()
    if not recipe.accelerator.is_main_process:
        raise NotMainProcess(f"process {recipe.accelerator.process_index} trained its share")
    return FinetunedAdapted(
        model_name=loaded.name, method=cfg.strategy_name, method_config=cfg.method_options(),
        train_args={**args.settings(), "learning_rate": recipe.lr}, prompt=zs, model=recipe.model, tokenizer=tok,
        base_params=n_params, train_cost=result.cost, history=result.state.history, final_dev=result.final_dev,
        n_train=len(train), n_dev=len(dev), model_path=str(loaded.path) if loaded.path else None,
        merge=cfg.merge, labels_used={"train": len(train), "dev": dev_labels_used(args, len(dev_eval))})
