"""`PromptAdapted`: a prompt (format, instruction, demonstrations, calibration) as a saved artifact.

``DIR/adapted.json`` holds everything `predict` needs without the task YAML: the model name, the
prompt format pieces, the instruction, the demonstrations (text + output + id), or for kNN the whole
demonstration pool inline plus the embedder name (pool embeddings are cached in
``DIR/knn_embeddings.npy`` and recomputed if that file is missing), the calibration (``p_cf`` and the
label order), the task's label verbalizers and input template, the strategy config and the
adaptlab version.

Calibration modes: ``none``; ``static`` (one ``p_cf`` for the one shared prompt, estimated at fit);
``per_query`` (kNN: every query has its own demonstrations, so ``p_cf`` is estimated per query from
the content-free inputs rendered with *that query's* demonstrations, at predict time; their tokens are
counted in the query's prompt tokens).
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

import adaptlab
from adaptlab.data.templates import render_input
from adaptlab.errors import AdaptlabError
from adaptlab.files import write_json_atomic
from adaptlab.lm.base import LoglikelihoodRequest
from adaptlab.strategies.artifacts import ARTIFACT_FILE, ModelBinder, Prediction, artifact_path, malformed_artifact
from adaptlab.strategies.base import ArtifactKind
from adaptlab.strategies.prompt.calibration import (CONTENT_FREE, calibrate, content_free_prior, label_logits,
                                                    label_probs)
from adaptlab.strategies.prompt.format import (Demo, PromptFormat, content_free_input, continuation,
                                               extract_answer, render_prompt, stop_strings)
from adaptlab.strategies.prompt.selection import Embedder, KnnIndex, order_demos

if TYPE_CHECKING:
    from collections.abc import Callable

    from adaptlab.data.example import Example
    from adaptlab.lm.base import LM

log = logging.getLogger(__name__)

KNN_EMBEDDINGS_FILE = "knn_embeddings.npy"


@dataclass
class KnnSpec:
    """Per-query demonstrations: the ``k`` nearest of ``pool`` by ``embedder`` similarity."""

    pool: list[Demo]
    embedder: str
    k: int
    order: str = "similar_last"
    seed: int = 0


@dataclass
class Calibration:
    """Contextual calibration state (see module docstring)."""

    mode: str = "none"  # none | static | per_query
    content_free: tuple[str, ...] = CONTENT_FREE
    p_cf: list[float] | None = None


@dataclass
class PromptAdapted:
    """A prompt-adapted model. Learned state: demonstrations / kNN pool and calibration. It predicts through the
    LM it is bound to (`bind`); a loaded artifact builds its model's LM on first use."""

    kind: ClassVar[str] = "prompt"

    model_name: str
    task_name: str
    task_type: str
    labels: list[tuple[str, str]]
    """(label key, verbalizer) in label order; empty for generation."""
    input_template: str
    fmt: PromptFormat
    score: str = "sum"
    demos: list[Demo] = field(default_factory=list)
    knn: KnnSpec | None = None
    calibration: Calibration = field(default_factory=Calibration)
    max_new_tokens: int = 64
    strategy: str = "zero_shot"
    config: dict[str, Any] = field(default_factory=dict)
    fit_info: dict[str, Any] = field(default_factory=dict)
    """Fit cost and search records: seconds, flops, computed_tokens, dev_queries, search..."""

    _lm: LM | None = field(default=None, init=False, repr=False, compare=False)
    _lm_factory: Callable[[], LM] | None = field(default=None, init=False, repr=False, compare=False)
    _embedder: Embedder | None = field(default=None, init=False, repr=False, compare=False)
    _index: KnnIndex | None = field(default=None, init=False, repr=False, compare=False)
    _last_prompt_tokens: float | None = field(default=None, init=False, repr=False, compare=False)

    # -- the model ------------------------------------------------------------------------------------
    @property
    def lm(self) -> LM:
        """The LM this prompt predicts through."""
        if self._lm is None:
            if self._lm_factory is None:
                raise AdaptlabError(f"the {self.strategy} prompt is not bound to a model",
                                    hint="fit it with a FitContext, or load it with load_adapted")
            self._lm = self._lm_factory()
        return self._lm

    def bind(self, lm: LM) -> PromptAdapted:
        """Predict through ``lm`` from now on; returns self."""
        self._lm, self._lm_factory = lm, None
        return self

    def bound(self, lm: LM) -> PromptAdapted:
        """A copy of this prompt predicting through ``lm`` (this one keeps its model)."""
        other = copy.copy(self)
        return other.bind(lm)

    def bind_lazily(self, factory: Callable[[], LM]) -> PromptAdapted:
        """Build the LM with ``factory`` on first use; returns self."""
        self._lm, self._lm_factory = None, factory
        return self

    # -- demonstrations ----------------------------------------------------------------------------
    @property
    def label_keys(self) -> list[str]:
        return [k for k, _ in self.labels]

    @property
    def verbalizers(self) -> list[str]:
        return [v for _, v in self.labels]

    def output_text(self, demo: Demo) -> str:
        """What a demonstration answers: its label's verbalizer, or its target text."""
        if self.task_type == "classification":
            return dict(self.labels).get(demo.output, demo.output)
        return demo.output

    def set_embedder(self, embedder: Embedder) -> None:
        """Use ``embedder`` for kNN (instead of loading ``knn.embedder`` by name)."""
        self._embedder = embedder

    def set_index(self, index: KnnIndex, embedder: Embedder) -> None:
        """Use a built kNN index over the pool and the embedder that built it."""
        self._index, self._embedder = index, embedder

    def knn_index(self) -> KnnIndex:
        if self.knn is None:
            raise ValueError("not a kNN prompt")
        if self._index is None:
            self._index = KnnIndex.build(self.knn.pool, self._get_embedder())
        return self._index

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            from adaptlab.models.embeddings import load_embedder

            assert self.knn is not None
            self._embedder = load_embedder(self.knn.embedder)
        return self._embedder

    def demos_for(self, texts: Sequence[str]) -> list[list[Demo]]:
        """The demonstrations each query's prompt shows, in prompt order."""
        if self.knn is None:
            return [list(self.demos) for _ in texts]
        spec = self.knn
        chosen = self.knn_index().select(list(texts), self._get_embedder(), spec.k)
        labels = self.label_keys or None
        return [order_demos(d, spec.order, labels=labels,
                            seed=spec.seed ^ zlib.crc32(t.encode("utf-8")))
                for d, t in zip(chosen, texts)]

    @property
    def n_demonstrations(self) -> int:
        return self.knn.k if self.knn is not None else len(self.demos)

    # -- prompts -------------------------------------------------------------------------------------
    def context(self, text: str, demos: Sequence[Demo], tokenizer: Any = None) -> str:
        pairs = [(d.input, self.output_text(d)) for d in demos]
        return render_prompt(self.fmt, text, pairs, tokenizer=tokenizer)

    def content_free_texts(self) -> list[str]:
        return [content_free_input(self.input_template, cf) for cf in self.calibration.content_free]

    def requests(self, context: str) -> LoglikelihoodRequest:
        return LoglikelihoodRequest(context, tuple(continuation(context, v) for v in self.verbalizers))

    def estimate_prior(self, demos: Sequence[Demo] | None = None) -> np.ndarray:
        """``p_cf`` of the prompt with ``demos`` (default: the static demonstrations)."""
        lm = self.lm
        tok = getattr(lm, "tokenizer", None)
        demos = self.demos if demos is None else demos
        reqs = [self.requests(self.context(t, demos, tok)) for t in self.content_free_texts()]
        return content_free_prior(lm.loglikelihood(reqs), self.score)  # type: ignore[arg-type]

    # -- prediction -----------------------------------------------------------------------------------
    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        """Predict every example; classification scores all queries in one loglikelihood call."""
        texts = [render_input(self.input_template, ex) for ex in examples]
        return self.predict_inputs(texts, [ex.id for ex in examples], progress=progress)

    def predict_inputs(self, texts: Sequence[str], ids: Sequence[str], *, progress: bool = False) -> list[Prediction]:
        """Predict already-rendered input texts."""
        if not texts:
            return []
        lm = self.lm
        tok = getattr(lm, "tokenizer", None)
        per_query = self.demos_for(texts)
        contexts = [self.context(t, d, tok) for t, d in zip(texts, per_query)]
        if self.task_type == "classification":
            preds = self._classify(contexts, per_query, ids, lm, tok, progress)
        else:
            preds = self._generate(contexts, ids, lm, progress)
        self._last_prompt_tokens = float(np.mean([p.prompt_tokens for p in preds]))
        return preds

    def _classify(self, contexts: list[str], per_query: list[list[Demo]], ids: Sequence[str],
                  lm: LM, tok: Any, progress: bool) -> list[Prediction]:
        per_query_cal = self.calibration.mode == "per_query"
        cf_texts = self.content_free_texts() if per_query_cal else []
        reqs: list[LoglikelihoodRequest] = []
        for ctx, demos in zip(contexts, per_query):
            reqs.append(self.requests(ctx))
            # content-free prompts next to their query: they share its demonstration prefix
            reqs.extend(self.requests(self.context(cf, demos, tok)) for cf in cf_texts)
        results = lm.loglikelihood(reqs, progress=progress)
        step = 1 + len(cf_texts)
        static = (np.asarray(self.calibration.p_cf) if self.calibration.mode == "static"
                  and self.calibration.p_cf is not None else None)
        out: list[Prediction] = []
        for i, ex_id in enumerate(ids):
            group = results[i * step:(i + 1) * step]
            res = group[0]
            probs = label_probs(res, self.score)  # type: ignore[arg-type]
            p_cf = content_free_prior(group[1:], self.score) if per_query_cal else static  # type: ignore[arg-type]
            if p_cf is not None:
                probs = calibrate(probs, p_cf)
            tokens = sum(_prompt_tokens(r, reqs[i * step + j].context, lm)
                         for j, r in enumerate(group))
            scored = sum(sum(r.token_counts) for r in group)
            logits = label_logits(res, "sum")
            out.append(Prediction(
                id=ex_id, pred=self.label_keys[int(np.argmax(probs))],
                scores={k: float(p) for k, p in zip(self.label_keys, probs)},
                logprobs={k: float(v) for k, v in zip(self.label_keys, logits)},
                prompt_tokens=tokens, scored_tokens=scored,
                extra={"p_cf": [float(x) for x in p_cf]} if per_query_cal and p_cf is not None else {},
            ))
        return out

    def _generate(self, contexts: list[str], ids: Sequence[str], lm: LM,
                  progress: bool) -> list[Prediction]:
        raw = lm.generate(contexts, max_new_tokens=self.max_new_tokens, stop=stop_strings(self.fmt),
                          progress=progress)
        return [Prediction(id=i, pred=extract_answer(r, self.fmt.answer_prefix), raw=r,
                           prompt_tokens=lm.count_tokens(c), scored_tokens=lm.count_tokens(r))
                for i, c, r in zip(ids, contexts, raw)]

    # -- cost ---------------------------------------------------------------------------------------------
    def cost(self) -> dict[str, Any]:
        info = self.fit_info
        return {
            "train": {"seconds": info.get("seconds", 0.0), "flops": info.get("flops", 0),
                      "peak_memory_bytes": info.get("peak_memory_bytes"), "trainable_params": 0},
            "query": {"prompt_tokens": self._last_prompt_tokens if self._last_prompt_tokens
                      is not None else info.get("prompt_tokens_per_query"),
                      "prefix_shared": self.knn is None,
                      "demonstrations": self.n_demonstrations,
                      "calibration": self.calibration.mode},
            "fit": {k: v for k, v in info.items() if k != "search"},
            "search": info.get("search"),
            "labels": self.labels_read(),
        }

    def labels_read(self) -> dict[str, int]:
        """Labelled examples this prompt was built from: ``train`` (its demonstrations, a kNN pool, or what the
        fit recorded as ``labels_read``) and ``dev`` (the dev sample a search scored)."""
        info = self.fit_info
        shown = len(self.knn.pool) if self.knn is not None else len(self.demos)
        dev = (info.get("search") or {}).get("dev_n", 0)
        return {"train": int(info.get("labels_read", shown)), "dev": int(dev)}

    # -- persistence ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        knn = None
        if self.knn is not None:
            knn = {"embedder": self.knn.embedder, "k": self.knn.k, "order": self.knn.order,
                   "seed": self.knn.seed, "embeddings_file": KNN_EMBEDDINGS_FILE,
                   "pool": [d.to_dict() for d in self.knn.pool]}
        return {
            "kind": self.kind,
            "adaptlab_version": adaptlab.__version__,
            "model": self.model_name,
            "strategy": self.strategy,
            "config": self.config,
            "task": {"name": self.task_name, "type": self.task_type, "input": self.input_template,
                     "labels": [{"key": k, "verbalizer": v} for k, v in self.labels]},
            "format": self.fmt.to_dict(),
            "score": self.score,
            "demonstrations": [d.to_dict() for d in self.demos],
            "knn": knn,
            "calibration": {"mode": self.calibration.mode,
                            "content_free": list(self.calibration.content_free),
                            "p_cf": self.calibration.p_cf, "label_order": self.label_keys},
            "generation": {"max_new_tokens": self.max_new_tokens},
            "fit": self.fit_info,
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.knn is not None and self._index is not None:
            tmp = directory / f".{KNN_EMBEDDINGS_FILE}.tmp.npy"
            np.save(tmp, self._index.embeddings)
            tmp.replace(directory / KNN_EMBEDDINGS_FILE)
        write_json_atomic(directory / ARTIFACT_FILE, self.to_json())
        return directory


def load_prompt_adapted(directory: Path, data: dict[str, Any], binder: ModelBinder) -> PromptAdapted:
    """Loader for ``kind: prompt`` artifacts; ``binder`` builds the LM of the model it names (on first use)."""
    path = directory / ARTIFACT_FILE
    try:
        task = data["task"]
        knn_data = data.get("knn")
        cal = data.get("calibration") or {}
        adapted = PromptAdapted(
            model_name=data["model"], task_name=task["name"], task_type=task["type"],
            labels=[(str(x["key"]), str(x["verbalizer"])) for x in task.get("labels", [])],
            input_template=task["input"], fmt=PromptFormat.from_dict(data["format"]),
            score=data.get("score", "sum"),
            demos=[Demo(**d) for d in data.get("demonstrations", [])],
            calibration=Calibration(mode=cal.get("mode", "none"),
                                    content_free=tuple(cal.get("content_free", CONTENT_FREE)),
                                    p_cf=cal.get("p_cf")),
            max_new_tokens=int((data.get("generation") or {}).get("max_new_tokens", 64)),
            strategy=data.get("strategy", "?"), config=data.get("config", {}),
            fit_info=data.get("fit", {}),
        )
        if knn_data:
            adapted.knn = KnnSpec(pool=[Demo(**d) for d in knn_data["pool"]],
                                  embedder=knn_data["embedder"], k=int(knn_data["k"]),
                                  order=knn_data.get("order", "similar_last"),
                                  seed=int(knn_data.get("seed", 0)))
    except (KeyError, TypeError) as e:
        raise malformed_artifact("prompt", path, e) from None
    model = adapted.model_name
    adapted.bind_lazily(lambda: binder(model))
    if cal.get("label_order") not in (None, adapted.label_keys):
        raise AdaptlabError("calibration label order differs from the task labels", file=path,
                            field="calibration.label_order")
    if knn_data:
        name = str(knn_data.get("embeddings_file") or KNN_EMBEDDINGS_FILE)
        emb_path = artifact_path(directory, name, field="knn.embeddings_file")
        if emb_path.is_file():
            emb = np.load(emb_path)
            if len(emb) == len(adapted.knn.pool):  # type: ignore[union-attr]
                adapted._index = KnnIndex(adapted.knn.pool, emb)  # type: ignore[union-attr]
    return adapted


PROMPT_ARTIFACT = ArtifactKind(PromptAdapted.kind, load_prompt_adapted)
"""The artifact kind of every prompt strategy (and of the prompt inside a fine-tuned artifact)."""


def _prompt_tokens(res: Any, context: str, lm: LM) -> int:
    return int(res.prompt_tokens) if getattr(res, "prompt_tokens", 0) else lm.count_tokens(context)
