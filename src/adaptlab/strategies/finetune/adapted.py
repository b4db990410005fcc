"""`FinetunedAdapted`: a fine-tuned model as an `Adapted` artifact (kind ``finetuned``).

Folder layout written by `FinetunedAdapted.save`::

    adapted.json     kind, method, base model name, weights kind, prompt format, configs, train cost, labels
    adapter/         peft adapter (adapter_config.json + adapter_model.safetensors)   lora/ia3/prompt_tuning
    model/           full weights + tokenizer (safetensors)                           full
    merged/          LoRA/IA3 merged into the base: a plain model folder              save(merge=True)
    train_log.jsonl  loss / eval history

Prediction goes through the zero-shot prompt of the prompt strategies (the format trained on) and
`adaptlab.lm.hf.HFLM` over the adapted model, so fine-tuning and prompting differ only in how the model
was adapted. ``lm`` is that LM.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import adaptlab
from adaptlab.errors import AdaptlabError
from adaptlab.files import write_json_atomic
from adaptlab.strategies.artifacts import ARTIFACT_FILE, ModelBinder, Prediction, artifact_path, malformed_artifact
from adaptlab.strategies.base import ArtifactKind, get_strategy
from adaptlab.strategies.finetune.train_args import TrainSettings
from adaptlab.strategies.prompt.artifact import load_prompt_adapted

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from adaptlab.data.example import Example
    from adaptlab.lm.hf import HFLM
    from adaptlab.strategies.prompt.artifact import PromptAdapted

log = logging.getLogger(__name__)

KIND = "finetuned"


@dataclass
class FinetunedAdapted:
    """A fine-tuned model + the prompt format it was trained on. ``model`` is a peft or plain model."""

    kind: ClassVar[str] = KIND

    model_name: str
    """The base model (`adaptlab.models.load_model` name) the adapter applies to."""
    method: str
    method_config: dict[str, Any]
    train_args: dict[str, Any]
    prompt: PromptAdapted
    model: torch.nn.Module
    tokenizer: Any
    base_params: int
    train_cost: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    final_dev: dict[str, Any] = field(default_factory=dict)
    n_train: int = 0
    n_dev: int = 0
    model_path: str | None = None
    weights: str = "memory"
    """Where the weights were loaded from: memory, adapter, model or merged."""
    merge: bool = False
    """`save` also writes ``merged/`` (the adapter folded into the base weights)."""
    labels_used: dict[str, int] | None = None
    """Labels the fit read: ``{"train": n_train, "dev": m}`` (m: the dev sample when it chose the checkpoint or
    could stop training early). None (an artifact saved before labels were counted): `label_counts` derives them
    from ``train_args``."""
    _lm: Any = field(default=None, repr=False)
    _last_prompt_tokens: float | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ Adapted protocol
    @property
    def strategy(self) -> str:
        return self.method

    @property
    def config(self) -> dict[str, Any]:
        return {"method": self.method, **{k: v for k, v in self.method_config.items() if k != "method"},
                "train": self.train_args, "prompt": self.prompt.config, "n_train": self.n_train}

    @property
    def virtual_tokens(self) -> int:
        """Soft-prompt tokens the model runs in front of every input (prompt tuning)."""
        return int(self.method_config.get("num_virtual_tokens", 0) or 0)

    @property
    def adapter(self) -> bool:
        """The weights are an adapter over the base model (not a whole model)."""
        return self.weights in ("memory", "adapter") and hasattr(self.model, "peft_config")

    @staticmethod
    def scoring_model_for(method: str) -> Callable[[Any], Any]:
        """How a method's trained model is scored (its config's ``scoring_model``; identity if unknown)."""
        try:
            return get_strategy(method).config.scoring_model  # type: ignore[attr-defined]
        except (AdaptlabError, AttributeError):
            return lambda model: model

    @property
    def lm(self) -> HFLM:
        """The `HFLM` over the adapted model (prompt tuning: with its soft prompt in front)."""
        if self._lm is None:
            from adaptlab.lm.hf import HFLM

            net = self.scoring_model_for(self.method)(self.model) if self.adapter else self.model
            lm = HFLM(net, self.tokenizer, name=f"{self.model_name}+{self.method}")
            lm.n_params = self.base_params or lm.n_params  # FLOPs: the base forward
            self._lm = lm
        return self._lm

    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        """Predictions in the prompt format trained on, through the adapted model."""
        preds = self.prompt.bound(self.lm).predict(examples, progress=progress)
        if self.virtual_tokens:
            for p in preds:  # the soft prompt runs through the model with every query
                p.prompt_tokens += self.virtual_tokens
                p.extra["virtual_tokens"] = self.virtual_tokens
        if preds:
            self._last_prompt_tokens = sum(p.prompt_tokens for p in preds) / len(preds)
        return preds

    def cost(self) -> dict[str, Any]:
        c = self.train_cost
        train = {k: c.get(k) for k in ("seconds", "flops", "peak_memory_bytes", "trainable_params",
                                       "artifact_bytes")}
        train.update({k: c[k] for k in ("tokens", "tokens_per_second", "step_seconds", "steps", "total_steps",
                                        "epochs_planned", "flops_formula", "eval_flops", "peak_memory_kind",
                                        "total_params", "num_processes")
                      if k in c})
        return {"train": train,
                "query": {"prompt_tokens": self._last_prompt_tokens, "prefix_shared": True,
                          "demonstrations": 0, "virtual_tokens": self.virtual_tokens,
                          "flops_formula": "2 x N x (prompt + scored tokens) per query, N = base parameters"},
                "fit": {"method": self.method, "final_dev": self.final_dev},
                "labels": self.label_counts()}

    def label_counts(self) -> dict[str, int]:
        """``{"train", "dev"}`` labels the fit read (recorded, or derived from ``train_args`` for an old artifact)."""
        if self.labels_used is not None:
            used = self.labels_used
            return {"train": int(used.get("train", self.n_train)), "dev": int(used.get("dev", 0))}
        return recorded_labels(self.train_args, self.n_train, self.n_dev)

    # ------------------------------------------------------------------ persistence
    def to_json(self, weights: str) -> dict[str, Any]:
        return {
            "kind": KIND,
            "adaptlab_version": adaptlab.__version__,
            "model": self.model_name,
            "method": self.method,
            "weights": weights,
            "method_config": self.method_config,
            "train_args": self.train_args,
            "prompt": self.prompt.to_json(),
            "base_params": self.base_params,
            "train": {"n_train": self.n_train, "n_dev": self.n_dev, "cost": self.train_cost,
                      "final_dev": self.final_dev, "labels": self.label_counts()},
        }

    def save(self, directory: str | Path) -> Path:
        """Write the artifact (safetensors only); with ``merge`` also ``merged/``: the adapter folded into the
        base weights, a plain model folder that loads without peft."""
        directory = Path(directory)
        merge = self.merge
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ARTIFACT_FILE).unlink(missing_ok=True)  # an incomplete save never looks complete
        if self.adapter:
            _replace_dir(directory / "adapter", lambda tmp: self.model.save_pretrained(str(tmp),
                                                                                       safe_serialization=True))
            weights = "adapter"
            if merge:
                merged = copy.deepcopy(self.model).merge_and_unload()
                _replace_dir(directory / "merged", lambda tmp: _save_plain(merged, self.tokenizer, tmp))
                weights = "merged"
        else:
            target = "merged" if self.weights == "merged" else "model"
            _replace_dir(directory / target, lambda tmp: _save_plain(self.model, self.tokenizer, tmp))
            weights = target
        with open(directory / "train_log.jsonl", "w", encoding="utf-8") as f:
            for rec in self.history:
                f.write(json.dumps(rec) + "\n")
        write_json_atomic(directory / ARTIFACT_FILE, self.to_json(weights))
        return directory


def dev_selects(train_args: Mapping[str, Any]) -> bool:
    """Whether the dev sample chose the returned weights under these training arguments: ``select_on_dev`` (absent:
    true, as before the option existed) and ``keep_best`` or early stopping."""
    if not train_args.get("select_on_dev", True):
        return False
    return bool(train_args.get("keep_best", True)) or train_args.get("early_stopping_patience") is not None


def recorded_labels(train_args: Mapping[str, Any], n_train: int, n_dev: int) -> dict[str, int]:
    """Labels a fit with ``train_args`` read from ``n_train`` training and ``n_dev`` dev examples: all training
    examples, and the dev sample (``eval_limit`` of them) when it chose the weights (`dev_selects`)."""
    if not n_dev or not dev_selects(train_args):
        return {"train": n_train, "dev": 0}
    limit = train_args.get("eval_limit", TrainSettings.model_fields["eval_limit"].default)
    return {"train": n_train, "dev": n_dev if limit is None else min(int(limit), n_dev)}


def _save_plain(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def _replace_dir(target: Path, write: Any) -> None:
    """Write a folder via ``write(tmp)`` then swap it into place."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def load_finetuned(directory: Path, data: dict[str, Any], binder: ModelBinder) -> FinetunedAdapted:
    """Loader for ``kind: finetuned`` artifacts (their weights are their own: ``binder`` is not used)."""
    from adaptlab.models.loading import load_model

    path = directory / ARTIFACT_FILE
    try:
        method, weights, base_name = data["method"], data["weights"], data["model"]
        prompt = load_prompt_adapted(directory, data["prompt"], binder)
    except (KeyError, TypeError) as e:
        raise malformed_artifact("fine-tuned", path, e) from None
    if weights not in ("adapter", "model", "merged"):
        raise AdaptlabError(f"unknown weights kind '{weights}'", file=path, field="weights")
    folder = artifact_path(directory, weights, field="weights")  # refuses a symlink leading outside
    if not folder.is_dir():
        raise AdaptlabError(f"missing weights folder '{weights}/'", file=path, field="weights")
    if weights == "adapter":
        from peft import PeftModel

        base = load_model(base_name)
        # the adapter on the base model's device (peft would otherwise put it on a GPU, the base on the CPU)
        model = PeftModel.from_pretrained(base.model, str(folder), is_trainable=False,
                                          torch_device=str(base.device)).eval()
        tokenizer = base.tokenizer
    else:
        loaded = load_model(str(folder))
        model, tokenizer = loaded.model, loaded.tokenizer
    train = data.get("train") or {}
    return FinetunedAdapted(
        model_name=base_name, method=method, method_config=data.get("method_config", {}),
        train_args=data.get("train_args", {}), prompt=prompt, model=model, tokenizer=tokenizer,
        base_params=int(data.get("base_params") or 0), train_cost=train.get("cost", {}),
        final_dev=train.get("final_dev", {}), n_train=int(train.get("n_train", 0)),
        n_dev=int(train.get("n_dev", 0)), weights=weights,
        labels_used=train.get("labels") if isinstance(train.get("labels"), dict) else None)


FINETUNED_ARTIFACT = ArtifactKind(KIND, load_finetuned)
