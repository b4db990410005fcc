"""Build the trainable model for each method (peft / transformers) and fit it with the recipe.

* ``lora`` / ``ia3``: `peft.get_peft_model`. Every target module must match a module of the model
  (checked against ``model.named_modules()`` BEFORE peft runs; peft would otherwise train nothing
  or fail with an unrelated message).
* ``prompt_tuning``: peft prompt tuning; the soft prompt starts from the embeddings of the task
  instruction (repeated to length), of random vocabulary rows, or from noise.
* ``full``: every parameter trains (a deep copy; the caller's model is never modified).

Training uses the zero-shot prompt of `adaptlab.prompting` (same instruction, input template and
verbalizers): classification trains ``context -> " " + verbalizer``, generation
``context -> " " + reference + EOS``; the loss covers the answer tokens only.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import ConfigError, DataError
from adaptlab.finetuning.batching import Pair, encode_pairs
from adaptlab.finetuning.configs import FullConfig, IA3Config, LoraConfig, PromptTuningConfig, TrainArgs

if TYPE_CHECKING:
    import torch

    from adaptlab.data import Example
    from adaptlab.finetuning.adapted import FinetunedAdapted
    from adaptlab.models import LoadedModel
    from adaptlab.prompting.artifact import PromptAdapted
    from adaptlab.tasks import Task

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- prompt format
def zero_shot_prompt(task: "Task", model_name: str, prompt: Any = None) -> "PromptAdapted":
    """The zero-shot `PromptAdapted` whose format fine-tuning trains on and predicts with.

    ``prompt`` is a `ZeroShotConfig`, a dict of its options, or None (defaults).
    """
    from adaptlab.prompting.strategies import ZeroShotConfig, new_adapted

    cfg = prompt if isinstance(prompt, ZeroShotConfig) else ZeroShotConfig.from_dict(prompt or {})
    if cfg.calibrate:
        raise ConfigError("calibration does not apply to fine-tuned models", field="prompt.calibrate")

    class _Named:  # new_adapted only reads the LM's name
        name = model_name

    return new_adapted(task, _Named(), cfg.prompt_format(task), cfg, "zero_shot")  # type: ignore[arg-type]


def training_pairs(prompt: "PromptAdapted", task: "Task", examples: Sequence["Example"],
                   tokenizer: Any = None) -> list[Pair]:
    """(context, answer) text pairs in the prompt's format; the answer is what the evaluator scores."""
    from adaptlab.prompting.format import continuation

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


# ----------------------------------------------------------------------------- target modules
def check_target_modules(model: "torch.nn.Module", targets: Sequence[str], *, field: str,
                         method: str) -> None:
    """ConfigError naming the first target that matches no module (peft's suffix rule)."""
    if list(targets) == ["all-linear"]:
        return
    names = [n for n, _ in model.named_modules() if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if n and type(m).__name__ == "Linear"})
    for target in targets:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ConfigError(f"{method} target module '{target}' matches no module of the model",
                              field=field, hint="linear layers here: " + ", ".join(leaves))


# ----------------------------------------------------------------------------- model building
def build_model(cfg: Any, base: "torch.nn.Module", *, instruction_ids: Sequence[int] = (),
                seed: int = 0) -> "torch.nn.Module":
    """The trainable model for ``cfg`` around ``base`` (``base`` is modified: pass a copy)."""
    import torch

    torch.manual_seed(seed)
    if isinstance(cfg, FullConfig):
        for p in base.parameters():
            p.requires_grad_(True)
        if cfg.freeze_embeddings:
            base.get_input_embeddings().weight.requires_grad_(False)
        return base
    import peft

    for p in base.parameters():
        p.requires_grad_(False)
    if isinstance(cfg, LoraConfig):
        check_target_modules(base, cfg.target_modules, field="target_modules", method="lora")
        targets = "all-linear" if list(cfg.target_modules) == ["all-linear"] else list(cfg.target_modules)
        pcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=cfg.rank, lora_alpha=cfg.alpha,
                               lora_dropout=cfg.dropout, target_modules=targets)
    elif isinstance(cfg, IA3Config):
        check_target_modules(base, cfg.target_modules, field="target_modules", method="ia3")
        pcfg = peft.IA3Config(task_type="CAUSAL_LM", target_modules=list(cfg.target_modules),
                              feedforward_modules=list(cfg.feedforward_modules))
    elif isinstance(cfg, PromptTuningConfig):
        pcfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.num_virtual_tokens,
                                       prompt_tuning_init="RANDOM")
    else:
        raise ConfigError(f"not a gradient method: {type(cfg).__name__}", field="method")
    model = peft.get_peft_model(base, pcfg)
    if isinstance(cfg, PromptTuningConfig):
        _init_soft_prompt(model, cfg, instruction_ids, seed)
    return model


def _init_soft_prompt(model: Any, cfg: PromptTuningConfig, instruction_ids: Sequence[int], seed: int) -> None:
    """Soft-prompt initialisation (peft's TEXT init without needing a tokenizer path)."""
    import torch

    emb = model.get_input_embeddings().weight
    v = cfg.num_virtual_tokens
    g = torch.Generator().manual_seed(seed)
    if cfg.init == "instruction" and instruction_ids:
        ids = (list(instruction_ids) * (v // len(instruction_ids) + 1))[:v]
        init = emb[torch.tensor(ids)].detach().clone()
    elif cfg.init in ("vocab", "instruction"):
        init = emb[torch.randint(0, emb.shape[0], (v,), generator=g)].detach().clone()
    else:
        init = torch.randn(v, emb.shape[1], generator=g) * float(emb.detach().std())
    encoder = model.prompt_encoder[model.active_adapter]
    with torch.no_grad():
        encoder.embedding.weight.copy_(init.to(encoder.embedding.weight.dtype))


def soft_prompt(model: Any) -> "torch.Tensor":
    """The learned ``(V, hidden)`` soft prompt of a peft prompt-tuning model."""
    return model.get_prompt_embedding_to_save(adapter_name=model.active_adapter).detach()


def scoring_model(model: Any, method: str) -> "torch.nn.Module":
    """The model to hand to `HFLM`: peft LoRA/IA3 models as they are, prompt tuning wrapped."""
    if method == "prompt_tuning":
        from adaptlab.finetuning.soft_prompt import SoftPromptLM

        return SoftPromptLM(model.get_base_model(), soft_prompt(model))
    return model


# ----------------------------------------------------------------------------- fit
def resolve_loaded(model: "str | LoadedModel", **load_options: Any) -> "LoadedModel":
    """Load ``model`` by name (``load_options`` go to `load_model`), or deep-copy a `LoadedModel`
    (fine-tuning must not touch the caller's)."""
    from adaptlab.models import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return LoadedModel(name=model.name, model=copy.deepcopy(model.model), tokenizer=model.tokenizer,
                           device=model.device, dtype=model.dtype, path=model.path)
    return load_model(model, **load_options)


def dev_scorer(prompt: "PromptAdapted", task: "Task", dev: Sequence["Example"], tokenizer: Any,
               method: str, name: str) -> Any:
    """A function scoring a model on ``dev`` with the task metric through HFLM (the eval path)."""
    from adaptlab.lm.hf import HFLM
    from adaptlab.metrics import compute

    refs = [task.label_of(ex) if task.type == "classification" else task.target_of(ex) for ex in dev]

    def score(model: "torch.nn.Module") -> float:
        lm = HFLM(scoring_model(model, method), tokenizer, name=name)
        preds = prompt.predict(dev, lm)
        return compute(task.metric, [p.pred for p in preds], refs)

    return score


def fit_gradient_method(cfg: Any, task: "Task", train: Sequence["Example"], dev: Sequence["Example"], *,
                        model: "str | LoadedModel", args: TrainArgs, out_dir: str | Path | None = None,
                        resume: bool = False, prompt: Any = None,
                        load_options: Mapping[str, Any] | None = None) -> "FinetunedAdapted":
    """Fine-tune with ``cfg`` on ``train`` and return the `FinetunedAdapted` (model in memory)."""
    from adaptlab.finetuning.adapted import FinetunedAdapted
    from adaptlab.finetuning.recipe import Recipe
    from adaptlab.prompting.artifact import seeded_sample

    if not train:
        raise DataError("no training examples", field="n_train")
    loaded = resolve_loaded(model, **(load_options or {}))  # on CPU; accelerate moves it to the device
    tok = loaded.tokenizer
    zs = zero_shot_prompt(task, loaded.name, prompt)
    generation = task.type == "generation"
    train_enc = encode_pairs(tok, training_pairs(zs, task, train, tok), max_length=args.max_length,
                             eos=generation)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    instruction_ids = tok(zs.fmt.instruction or task.name, add_special_tokens=False)["input_ids"]
    net = build_model(cfg, loaded.model, instruction_ids=instruction_ids, seed=args.seed)
    dev_eval = seeded_sample(list(dev), args.eval_limit, args.seed)
    dev_enc = encode_pairs(tok, training_pairs(zs, task, dev_eval, tok), max_length=args.max_length,
                           eos=generation)
    scorer = (dev_scorer(zs, task, dev_eval, tok, cfg.name, loaded.name)
              if args.eval_metric and dev_eval else None)
    work = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="adaptlab-ft-"))
    virtual = cfg.num_virtual_tokens if isinstance(cfg, PromptTuningConfig) else 0
    recipe = Recipe(net, train_enc, dev_enc, args=args, lr=args.learning_rate or cfg.default_lr,
                    pad_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                    work_dir=work, full=isinstance(cfg, FullConfig), dev_scorer=scorer, resume=resume,
                    extra_tokens_per_example=virtual, n_params=n_params,
                    windowed_loss=not isinstance(cfg, PromptTuningConfig))
    result = recipe.run()
    net = recipe.model
    return FinetunedAdapted(
        model_name=loaded.name, method=cfg.name, method_config=cfg.to_dict(),
        train_args={**_args_dict(args), "learning_rate": recipe.lr},
        prompt=zs, model=net, tokenizer=tok, base_params=n_params, train_cost=result.cost,
        history=result.state.history, final_dev=result.final_dev, n_train=len(train), n_dev=len(dev),
        model_path=str(loaded.path) if loaded.path else None,
        is_main_process=recipe.accelerator.is_main_process)


def _args_dict(args: TrainArgs) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(args)
