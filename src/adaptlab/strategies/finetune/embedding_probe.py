"""The embedding probe: MiniLM sentence embeddings + logistic regression (scikit-learn).

The cheap classic baseline for classification: the LM is never used. Fitting embeds the training
inputs once and fits an L2-regularised logistic regression; the artifact (kind ``embedding_probe``)
stores the coefficients as safetensors (``probe.safetensors``) plus JSON, never a pickle, and
predicts with the same arithmetic as scikit-learn's ``predict_proba`` (sigmoid for two classes,
softmax otherwise).

Cost: training FLOPs ~= 2 x N_embedder x (embedded tokens) (the regression is negligible); per query
2 x N_embedder x (input tokens). Labels: the training examples; the dev split is scored for the log only (it
chooses nothing), so it counts 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from pydantic import Field

import adaptlab
from adaptlab.data.templates import render_input
from adaptlab.errors import AdaptlabError, ConfigError, DataError
from adaptlab.files import write_json_atomic
from adaptlab.lm.base import Usage, no_kept_prefix
from adaptlab.models.costs import peak_rss_bytes
from adaptlab.strategies.artifacts import ARTIFACT_FILE, ModelBinder, Prediction, artifact_path, malformed_artifact
from adaptlab.strategies.base import ArtifactKind, FitContext, StrategyConfig, strategy

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.models.embeddings import Embedder

log = logging.getLogger(__name__)

KIND = "embedding_probe"
WEIGHTS_FILE = "probe.safetensors"


class EmbedderLM:
    """The probe's "LM": an embedder with the LM bookkeeping (name, usage, token counts, n_params).

    It only embeds; `loglikelihood`/`generate` raise, since a probe never scores text.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.name = embedder.name
        self.usage = Usage()
        self.n_params = int(sum(p.numel() for p in embedder.model.parameters()))
        self.max_length: int | None = embedder.max_length
        self.tokenizer = embedder.tokenizer

    keep_prefix = staticmethod(no_kept_prefix)
    """An embedder has no prompt prefix to keep."""

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True, max_length=self.embedder.max_length)["input_ids"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.embedder.encode(texts)
        tokens = sum(self.count_tokens(t) for t in texts)
        self.usage.add(Usage(requests=len(texts), prompt_tokens=tokens, computed_tokens=tokens,
                             seconds=time.perf_counter() - t0))
        return out

    def loglikelihood(self, requests: Any, *, progress: bool = False) -> Any:
        raise TypeError("an embedding probe's embedder cannot score text continuations")

    def generate(self, prompts: Any, **kw: Any) -> Any:
        raise TypeError("an embedding probe's embedder cannot generate text")


def _probabilities(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """scikit-learn LogisticRegression.predict_proba from its coefficients."""
    z = x @ coef.T + intercept
    if coef.shape[0] == 1:
        p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class EmbeddingProbeAdapted:
    """A fitted probe: coefficients over embedder features for the task's labels."""

    kind: ClassVar[str] = KIND

    model_name: str
    """The embedder (`adaptlab.models.embeddings.load_embedder` name)."""
    task_name: str
    labels: list[tuple[str, str]]
    input_template: str
    instruction: str | None
    classes: list[str]
    """Label keys in coefficient row order (scikit-learn's ``classes_``)."""
    coef: np.ndarray
    intercept: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)
    _lm: EmbedderLM | None = field(default=None, repr=False)
    _last_prompt_tokens: float | None = field(default=None, repr=False)

    @property
    def strategy(self) -> str:
        return KIND

    @property
    def lm(self) -> EmbedderLM:
        """The embedder, with the LM bookkeeping (loaded on first use after `load_probe`)."""
        if self._lm is None:
            from adaptlab.models.embeddings import load_embedder

            self._lm = EmbedderLM(load_embedder(self.model_name))
        return self._lm

    def texts(self, examples: Sequence[Example]) -> list[str]:
        texts = [render_input(self.input_template, ex) for ex in examples]
        return [f"{self.instruction}\n{t}" for t in texts] if self.instruction else texts

    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        """Label probabilities for each example."""
        if not examples:
            return []
        lm = self.lm
        texts = self.texts(examples)
        probs = _probabilities(lm.embed(texts).astype(np.float64), self.coef, self.intercept)
        order = [k for k, _ in self.labels]
        out = []
        for ex, text, row in zip(examples, texts, probs):
            by_class = dict(zip(self.classes, row.tolist()))
            scores = {k: float(by_class.get(k, 0.0)) for k in order}
            out.append(Prediction(id=ex.id, pred=self.classes[int(np.argmax(row))], scores=scores,
                                  prompt_tokens=lm.count_tokens(text)))
        self._last_prompt_tokens = sum(p.prompt_tokens for p in out) / len(out)
        return out

    def cost(self) -> dict[str, Any]:
        info = self.fit_info
        out = {"train": {k: info.get(k) for k in ("seconds", "flops", "peak_memory_bytes", "trainable_params",
                                                  "artifact_bytes", "tokens", "tokens_per_second", "flops_formula")},
               "query": {"prompt_tokens": self._last_prompt_tokens, "prefix_shared": False,
                         "demonstrations": 0,
                         "flops_formula": "2 x N_embedder x input tokens per query"},
               "fit": info}
        if isinstance(info.get("n_train"), int):
            out["labels"] = {"train": info["n_train"], "dev": 0}  # dev accuracy is only logged: it chooses nothing
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "adaptlab_version": adaptlab.__version__, "model": self.model_name,
                "task": {"name": self.task_name, "type": "classification", "input": self.input_template,
                         "labels": [{"key": k, "verbalizer": v} for k, v in self.labels]},
                "instruction": self.instruction, "classes": self.classes, "weights": WEIGHTS_FILE,
                "config": self.config, "fit": self.fit_info}

    def save(self, directory: str | Path) -> Path:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS_FILE}.tmp"
        save_file({"coef": np.ascontiguousarray(self.coef), "intercept": np.ascontiguousarray(self.intercept)},
                  str(tmp))
        tmp.replace(directory / WEIGHTS_FILE)
        write_json_atomic(directory / ARTIFACT_FILE, self.to_json())
        return directory


def fit_probe(cfg: EmbeddingProbeConfig, task: Task, train: Sequence[Example], dev: Sequence[Example],
              ctx: FitContext) -> EmbeddingProbeAdapted:
    """Embed ``train`` and fit the logistic regression; ``dev`` accuracy goes into ``fit_info``."""
    from sklearn.linear_model import LogisticRegression

    seed = ctx.seed
    if task.type != "classification":
        raise ConfigError("embedding_probe works for classification tasks only", field="method",
                          hint="use lora/ia3/prompt_tuning/full for generation tasks")
    y = [task.label_of(ex) for ex in train]
    if len(set(y)) < 2:
        raise DataError("embedding_probe needs training examples of at least two labels", field="n_train")
    t0 = time.perf_counter()
    lm = EmbedderLM(ctx.embedder(cfg.embedder))
    adapted = EmbeddingProbeAdapted(
        model_name=cfg.embedder, task_name=task.name, labels=list(zip(task.label_keys, task.verbalizers)),
        input_template=task.input, instruction=task.instruction if cfg.include_instruction else None,
        classes=[], coef=np.zeros((0, 0)), intercept=np.zeros(0), config={**cfg.to_dict(), "seed": seed},
        _lm=lm)
    fit_start = time.perf_counter()
    x = lm.embed(adapted.texts(train))
    clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, class_weight=cfg.class_weight, random_state=seed)
    clf.fit(x, y)
    adapted.classes = [str(c) for c in clf.classes_]
    adapted.coef = clf.coef_.astype(np.float64)
    adapted.intercept = clf.intercept_.astype(np.float64)
    fit_seconds = time.perf_counter() - fit_start
    tokens = lm.usage.computed_tokens
    info: dict[str, Any] = {
        "seconds": time.perf_counter() - t0, "fit_seconds": fit_seconds, "tokens": tokens,
        "tokens_per_second": tokens / fit_seconds if fit_seconds else None,
        "flops": 2 * lm.n_params * tokens, "flops_formula": "2 x N_embedder x embedded tokens",
        "peak_memory_bytes": peak_rss_bytes(), "peak_memory_kind": "rss",
        "trainable_params": int(adapted.coef.size + adapted.intercept.size), "embedder_params": lm.n_params,
        "n_train": len(train), "n_dev": len(dev)}
    if dev:
        preds = adapted.predict(dev)
        gold = [task.label_of(ex) for ex in dev]
        info["dev_accuracy"] = float(np.mean([p.pred == g for p, g in zip(preds, gold)]))
    adapted.fit_info = info
    log.info("embedding probe: %d examples, %d classes, dev accuracy %s", len(train), len(adapted.classes),
             info.get("dev_accuracy"))
    return adapted


def load_probe(directory: Path, data: dict[str, Any], binder: ModelBinder) -> EmbeddingProbeAdapted:
    """Loader for ``kind: embedding_probe`` artifacts (the probe names its own embedder: ``binder`` is not used)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = directory / ARTIFACT_FILE
    weights_path = artifact_path(directory, data.get("weights", WEIGHTS_FILE), field="weights")
    try:
        weights = load_file(str(weights_path))
    except (OSError, ValueError, SafetensorError) as e:
        raise AdaptlabError(f"cannot read the probe weights: {e}", file=weights_path, field="weights") from None
    try:
        task = data["task"]
        return EmbeddingProbeAdapted(
            model_name=data["model"], task_name=task["name"],
            labels=[(str(x["key"]), str(x["verbalizer"])) for x in task["labels"]],
            input_template=task["input"], instruction=data.get("instruction"),
            classes=[str(c) for c in data["classes"]], coef=weights["coef"], intercept=weights["intercept"],
            config=data.get("config", {}), fit_info=data.get("fit", {}))
    except (KeyError, TypeError) as e:
        raise malformed_artifact("embedding_probe", path, e) from None
    except OSError as e:
        raise AdaptlabError(f"cannot read probe weights: {e}", file=path, field="weights") from None


PROBE_ARTIFACT = ArtifactKind(KIND, load_probe)


class EmbeddingClassifierConfig(StrategyConfig):
    """Options of a logistic-regression head on sentence embeddings (the probe's, SetFit's); learns the labels."""

    embedder: str = "minilm-l6"
    """Sentence embedder name (`adaptlab.models.embeddings.load_embedder`)."""
    C: float = Field(1.0, gt=0)
    """Inverse L2 regularisation strength of the logistic regression."""
    max_iter: int = Field(2000, ge=1)
    """Solver iterations."""

    def learns_labels(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.strategy_name, **super().to_dict()}


@strategy("embedding_probe", family="finetune", artifact=PROBE_ARTIFACT)
class EmbeddingProbeConfig(EmbeddingClassifierConfig):
    """Sentence embeddings (MiniLM) + logistic regression: the cheap classic baseline.

    Classification only; trains in seconds on CPU and never touches the LM.
    """

    class_weight: Literal["balanced"] | None = None
    """``balanced`` reweights classes inversely to their frequency."""
    include_instruction: bool = False
    """Embed ``instruction + input`` instead of the input alone."""

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> EmbeddingProbeAdapted:
        """Embed the training inputs and fit the classifier; ``dev`` is scored for the log only."""
        return fit_probe(self, task, train, dev, ctx)
