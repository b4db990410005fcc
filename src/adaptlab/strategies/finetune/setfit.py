"""SetFit: contrastive fine-tuning of a sentence encoder, then a logistic-regression head (Tunstall et al. 2022,
"Efficient Few-Shot Learning Without Prompts").

Fitting has two stages, as the SetFit library runs them:

1. **Contrastive body training.** From the labelled examples it draws sentence pairs: in each of
   ``num_iterations`` rounds every example is paired once with a random example of its own label (target 1) and
   once with one of another label (target 0), so there are ``2 x num_iterations x n`` pairs (SetFit's
   ``num_iterations``). The encoder (a deep copy of the shared MiniLM `Embedder`'s HF model: the shared one is
   never modified) is trained on them with sentence-transformers' ``CosineSimilarityLoss``: the mean squared
   error between the cosine similarity of the two mean-pooled embeddings and the pair's target. AdamW,
   learning rate 2e-5 with SetFit's linear schedule (10 % warm-up, then linear decay), batches of 16 pairs,
   one epoch, all in plain torch (no ``setfit`` or ``sentence-transformers`` package).
2. **Head.** The training inputs are embedded with the fine-tuned encoder (mean pooling, L2 norm) and an
   L2-regularised logistic regression (scikit-learn) is fitted on them, exactly as the embedding probe does.

Classification only. The artifact (kind ``setfit``) holds the fine-tuned encoder as safetensors with its
tokenizer (``encoder/``), the head coefficients (``head.safetensors``) and ``adapted.json``; no pickle.

Cost: training FLOPs ~= 6 x N_encoder x (pair tokens trained on) + 2 x N_encoder x (tokens embedded for the head);
per query 2 x N_encoder x (input tokens). Labels (``cost()["labels"]``): the training examples; the dev split is
scored for the log only (it chooses nothing), so it counts 0.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pydantic import Field

import adaptlab
from adaptlab.errors import AdaptlabError, ConfigError, DataError
from adaptlab.files import write_json_atomic
from adaptlab.models.costs import count_params
from adaptlab.models.embeddings import Embedder, load_encoder
from adaptlab.models.loading import resolve_device
from adaptlab.strategies.artifacts import ARTIFACT_FILE, ModelBinder, artifact_path, malformed_artifact
from adaptlab.strategies.base import ArtifactKind, FitContext, strategy
from adaptlab.strategies.finetune.accelerator import peak_memory_bytes
from adaptlab.strategies.finetune.embedding_probe import EmbedderLM, EmbeddingClassifierConfig, EmbeddingProbeAdapted

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task

log = logging.getLogger(__name__)

KIND = "setfit"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
WARMUP_PROPORTION = 0.1
"""SetFit's ``warmup_proportion``: the share of steps over which the learning rate rises linearly."""
FLOPS_FORMULA = ("6 x N_encoder x pair tokens trained on (forward + backward) + 2 x N_encoder x tokens embedded "
                 "for the head (N_encoder = encoder parameters; Kaplan et al. 2020, attention term ignored)")


def contrastive_pairs(labels: Sequence[str], num_iterations: int, seed: int) -> list[tuple[int, int, float]]:
    """SetFit's pairs ``(i, j, target)`` over example indices, shuffled with ``seed``.

    In each of ``num_iterations`` rounds every example gets one positive partner (another example of its label,
    itself when it is its label's only example; target 1.0) and one negative partner (an example of another
    label; target 0.0).
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    others = {y: [i for i, z in enumerate(labels) if z != y] for y in by_label}
    pairs: list[tuple[int, int, float]] = []
    for _ in range(num_iterations):
        for i, y in enumerate(labels):
            same = [j for j in by_label[y] if j != i] or [i]
            pairs.append((i, same[int(rng.integers(len(same)))], 1.0))
            if others[y]:
                pairs.append((i, others[y][int(rng.integers(len(others[y])))], 0.0))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def _mean_pooled(model: Any, tokenizer: Any, texts: list[str], max_length: int, device: Any) -> tuple[Any, int]:
    """Mean-pooled embeddings of ``texts`` (with gradients) and the number of real tokens run."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return pooled, int(enc["attention_mask"].sum())


def train_encoder(encoder: Embedder, texts: Sequence[str], pairs: Sequence[tuple[int, int, float]],
                  cfg: SetFitConfig, seed: int) -> dict[str, Any]:
    """Train ``encoder.model`` in place on ``pairs`` with the cosine-similarity MSE loss; returns the statistics
    (steps, tokens, mean loss per epoch, seconds)."""
    import torch

    model, device = encoder.model, encoder.device
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = math.ceil(total * WARMUP_PROPORTION)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)

    def schedule(step: int) -> float:  # sentence-transformers' WarmupLinear
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = np.random.default_rng(seed + 1)
    tokens, losses = 0, []
    t0 = time.perf_counter()
    model.train()
    try:
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(pairs)) if epoch else np.arange(len(pairs))  # pairs come shuffled
            epoch_loss = 0.0
            for start in range(0, len(order), cfg.batch_size):
                batch = [pairs[k] for k in order[start:start + cfg.batch_size]]
                side = [texts[i] for i, _, _ in batch] + [texts[j] for _, j, _ in batch]
                pooled, n_tok = _mean_pooled(model, encoder.tokenizer, side, encoder.max_length, device)
                a, b = pooled[:len(batch)], pooled[len(batch):]
                target = torch.tensor([y for _, _, y in batch], dtype=pooled.dtype, device=pooled.device)
                loss = torch.nn.functional.mse_loss(torch.nn.functional.cosine_similarity(a, b), target)
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                tokens += n_tok
                epoch_loss += float(loss.detach()) * len(batch)
            losses.append(epoch_loss / len(pairs))
            log.info("setfit: epoch %d/%d, mean pair loss %.4f", epoch + 1, cfg.epochs, losses[-1])
    finally:
        model.eval()
    return {"steps": total, "tokens": tokens, "epoch_losses": losses, "seconds": time.perf_counter() - t0}


@dataclass
class SetFitAdapted(EmbeddingProbeAdapted):
    """A fitted SetFit model: the fine-tuned encoder (``lm``) and logistic-regression coefficients over its
    embeddings. Predicts label probabilities like the embedding probe."""

    kind: ClassVar[str] = KIND

    max_length: int = 256
    """Tokens per input the encoder was trained and predicts with."""

    @property
    def strategy(self) -> str:
        return KIND

    @property
    def lm(self) -> EmbedderLM:
        """The fine-tuned encoder, with the LM bookkeeping."""
        if self._lm is None:
            raise AdaptlabError("this setfit artifact has no encoder: load it with adaptlab.strategies.load_adapted",
                                field="encoder")
        return self._lm

    def cost(self) -> dict[str, Any]:
        out = super().cost()
        info = self.fit_info
        out["train"].update({k: info.get(k) for k in ("labels", "peak_memory_kind", "encoder_params",
                                                      "head_params", "pairs", "steps")})
        return out

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.pop("weights", None)
        data.update({"kind": KIND, "adaptlab_version": adaptlab.__version__, "head": HEAD_FILE,
                     "encoder": ENCODER_DIR, "max_length": self.max_length})
        return data

    def save(self, directory: str | Path) -> Path:
        """``encoder/`` (safetensors weights, config, tokenizer), ``head.safetensors`` and ``adapted.json``."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        encoder = self.lm.embedder
        tmp_dir = directory / f".{ENCODER_DIR}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        encoder.model.save_pretrained(str(tmp_dir), safe_serialization=True)
        encoder.tokenizer.save_pretrained(str(tmp_dir))
        shutil.rmtree(directory / ENCODER_DIR, ignore_errors=True)
        tmp_dir.replace(directory / ENCODER_DIR)
        tmp = directory / f".{HEAD_FILE}.tmp"
        save_file({"coef": np.ascontiguousarray(self.coef), "intercept": np.ascontiguousarray(self.intercept)},
                  str(tmp))
        tmp.replace(directory / HEAD_FILE)
        write_json_atomic(directory / ARTIFACT_FILE, self.to_json())
        return directory


def _seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators (dropout during the contrastive training draws from torch)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit_setfit(cfg: SetFitConfig, task: Task, train: Sequence[Example], dev: Sequence[Example],
               ctx: FitContext) -> SetFitAdapted:
    """Contrastive training of a copy of the embedder, then the logistic-regression head; ``dev`` accuracy goes
    into ``fit_info``."""
    from sklearn.linear_model import LogisticRegression

    seed = ctx.seed
    if task.type != "classification":
        raise ConfigError(f"setfit works for classification tasks only (task '{task.name}' is {task.type})",
                          field="method", hint="use lora/ia3/prompt_tuning/full for generation tasks")
    y = [task.label_of(ex) for ex in train]
    if len(set(y)) < 2:
        raise DataError("setfit needs training examples of at least two labels", field="n_train")
    t0 = time.perf_counter()
    base = ctx.embedder(cfg.embedder)
    _seed_everything(seed)
    max_length = min(cfg.max_length, base.max_length) if cfg.max_length else base.max_length
    encoder = Embedder(f"{base.name}+setfit", copy.deepcopy(base.model), base.tokenizer, base.device,
                       max_length=max_length)  # the shared embedder stays untouched
    lm = EmbedderLM(encoder)
    adapted = SetFitAdapted(
        model_name=cfg.embedder, task_name=task.name, labels=list(zip(task.label_keys, task.verbalizers)),
        input_template=task.input, instruction=None, classes=[], coef=np.zeros((0, 0)), intercept=np.zeros(0),
        config={**cfg.to_dict(), "seed": seed}, _lm=lm, max_length=max_length)
    texts = adapted.texts(train)
    pairs = contrastive_pairs(y, cfg.num_iterations, seed)
    body = train_encoder(encoder, texts, pairs, cfg, seed)
    head_start = time.perf_counter()
    x = lm.embed(texts)
    clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=seed)
    clf.fit(x, y)
    adapted.classes = [str(c) for c in clf.classes_]
    adapted.coef = clf.coef_.astype(np.float64)
    adapted.intercept = clf.intercept_.astype(np.float64)
    head_seconds = time.perf_counter() - head_start
    n_params = count_params(encoder.model)
    embedded = lm.usage.computed_tokens
    head_params = int(adapted.coef.size + adapted.intercept.size)
    seconds = time.perf_counter() - t0
    info: dict[str, Any] = {
        "seconds": seconds, "body_seconds": body["seconds"], "head_seconds": head_seconds,
        "tokens": body["tokens"] + embedded, "pair_tokens": body["tokens"], "embedded_tokens": embedded,
        "tokens_per_second": (body["tokens"] + embedded) / seconds if seconds else None,
        "flops": 6 * n_params * body["tokens"] + 2 * n_params * embedded, "flops_formula": FLOPS_FORMULA,
        "peak_memory_bytes": peak_memory_bytes(encoder.device),
        "peak_memory_kind": "cuda_max_allocated" if encoder.device.type == "cuda" else "rss",
        "trainable_params": n_params + head_params, "encoder_params": n_params, "head_params": head_params,
        "pairs": len(pairs), "steps": body["steps"], "epoch_losses": body["epoch_losses"],
        "labels": len(train), "n_train": len(train), "n_dev": len(dev)}
    if dev:
        preds = adapted.predict(dev)
        gold = [task.label_of(ex) for ex in dev]
        info["dev_accuracy"] = float(np.mean([p.pred == g for p, g in zip(preds, gold)]))
    adapted.fit_info = info
    log.info("setfit: %d examples, %d pairs, %d classes, %.1fs, dev accuracy %s", len(train), len(pairs),
             len(adapted.classes), seconds, info.get("dev_accuracy"))
    return adapted


def _load_encoder(folder: Path, name: str, max_length: int) -> Embedder:
    """The fine-tuned encoder saved in ``folder`` (safetensors only, no network)."""
    if not (folder / "model.safetensors").is_file():
        raise AdaptlabError("no model.safetensors in the setfit encoder folder", file=folder, field="encoder")
    model, tokenizer = load_encoder(folder, "the setfit encoder", error=AdaptlabError, field="encoder")
    device = resolve_device("cpu")
    return Embedder(f"{name}+setfit", model.to(device).eval(), tokenizer, device, max_length=max_length)


def load_setfit(directory: Path, data: dict[str, Any], binder: ModelBinder) -> SetFitAdapted:
    """Loader for ``kind: setfit`` artifacts (the artifact carries its own encoder: ``binder`` is not used)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = directory / ARTIFACT_FILE
    head_path = artifact_path(directory, data.get("head", HEAD_FILE), field="head")
    encoder_path = artifact_path(directory, data.get("encoder", ENCODER_DIR), field="encoder")
    try:
        weights = load_file(str(head_path))
    except (OSError, ValueError, SafetensorError) as e:
        raise AdaptlabError(f"cannot read the setfit head: {e}", file=head_path, field="head") from None
    try:
        task = data["task"]
        max_length = int(data["max_length"])
        encoder = _load_encoder(encoder_path, str(data["model"]), max_length)
        return SetFitAdapted(
            model_name=data["model"], task_name=task["name"],
            labels=[(str(x["key"]), str(x["verbalizer"])) for x in task["labels"]],
            input_template=task["input"], instruction=data.get("instruction"),
            classes=[str(c) for c in data["classes"]], coef=weights["coef"], intercept=weights["intercept"],
            config=data.get("config", {}), fit_info=data.get("fit", {}), _lm=EmbedderLM(encoder),
            max_length=max_length)
    except (KeyError, TypeError) as e:
        raise malformed_artifact(KIND, path, e) from None


SETFIT_ARTIFACT = ArtifactKind(KIND, load_setfit)


@strategy("setfit", family="finetune", artifact=SETFIT_ARTIFACT)
class SetFitConfig(EmbeddingClassifierConfig):
    """SetFit: contrastive fine-tuning of the sentence encoder, then a logistic-regression head.

    Classification only (Tunstall et al. 2022); a few labelled examples per class, no prompt. Besides the keys
    below it takes its own ``epochs`` (passes over the pairs, default 1), ``learning_rate`` (AdamW, 2e-5),
    ``batch_size`` (pairs per step, 16) and ``max_length`` (tokens per input, default the encoder's limit), with
    SetFit's defaults rather than the training options'.
    """

    embedder: str = "minilm-l6"
    """Sentence encoder to fine-tune (`adaptlab.models.embeddings.load_embedder` name); the shared one is copied."""
    num_iterations: int = Field(20, ge=1)
    """Pair-drawing rounds: each gives every training example one positive and one negative pair (SetFit's
    ``num_iterations``; ``2 x num_iterations x n`` pairs)."""
    epochs: int = Field(1, ge=1)
    """Passes over the pairs."""
    learning_rate: float = Field(2e-5, gt=0)
    """AdamW peak learning rate (10 % linear warm-up, then linear decay)."""
    batch_size: int = Field(16, ge=1)
    """Pairs per optimizer step."""
    max_length: int | None = Field(None, ge=2)
    """Tokens per input when training and predicting (default: the encoder's limit, 256 for MiniLM)."""

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> SetFitAdapted:
        """Fine-tune a copy of the encoder on pairs of ``train``, then fit the head; ``dev`` is scored for the log."""
        return fit_setfit(self, task, train, dev, ctx)
