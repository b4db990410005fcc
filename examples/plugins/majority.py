"""A majority-class baseline as an adaptlab plugin: one file, registered through the public registry.

List it in an experiment (``plugins: [plugins/majority.py]``) and use it like a built-in strategy
(``strategies: [majority, zero_shot, ...]``). It predicts the most frequent label of the training examples it
reads, with the training label frequencies as its scores: the floor any adapted model must clear. It reads the
labels of each training size, so it belongs to the prompt family (no weights change) and counts those labels.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from adaptlab.data import Example, Task
from adaptlab.files import write_json_atomic
from adaptlab.lm import NoModelLM
from adaptlab.strategies import (ARTIFACT_FILE, ArtifactKind, FitContext, LabelUse, ModelBinder, Prediction,
                                 StrategyConfig, strategy)

KIND = "majority"


@dataclass
class MajorityAdapted:
    """The fitted baseline: the label prior of the training examples."""

    kind: ClassVar[str] = KIND
    strategy: ClassVar[str] = "majority"

    task_name: str
    prior: dict[str, float]
    """Label key -> share of the training examples, in the task's label order."""
    n_train: int
    fit_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    model_name: str = "majority"
    lm: NoModelLM = field(default_factory=lambda: NoModelLM("majority"), repr=False)

    @property
    def majority(self) -> str:
        return max(self.prior, key=lambda k: (self.prior[k], -list(self.prior).index(k)))

    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        return [Prediction(id=ex.id, pred=self.majority, scores=dict(self.prior)) for ex in examples]

    def cost(self) -> dict[str, Any]:
        return {"train": {"seconds": self.fit_seconds, "flops": 0, "trainable_params": 0},
                "query": {"prompt_tokens": 0, "prefix_shared": True, "demonstrations": 0}}

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        write_json_atomic(directory / ARTIFACT_FILE, {
            "kind": KIND, "model": self.model_name, "strategy": self.strategy, "config": self.config,
            "task": {"name": self.task_name, "type": "classification", "input": "{{ text }}",
                     "labels": [{"key": k, "verbalizer": k} for k in self.prior]},
            "prior": self.prior, "n_train": self.n_train})
        return directory


def load_majority(directory: Path, data: dict[str, Any], binder: ModelBinder) -> MajorityAdapted:
    """Loader of saved majority artifacts (no model to bind)."""
    return MajorityAdapted(task_name=data["task"]["name"], prior={str(k): float(v) for k, v in data["prior"].items()},
                           n_train=int(data["n_train"]), config=dict(data.get("config") or {}))


@strategy("majority", family="prompt", artifact=ArtifactKind(KIND, load_majority))
class MajorityConfig(StrategyConfig):
    """Predict the most frequent training label (the floor any adapted model must clear)."""

    def label_use(self) -> LabelUse:
        return LabelUse("train_sizes")  # it reads the labels of each training size, and counts them

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> MajorityAdapted:
        t0 = time.perf_counter()
        counts = Counter(task.label_of(ex) for ex in train)
        total = sum(counts.values()) or 1
        prior = {k: counts.get(k, 0) / total for k in task.label_keys}
        return MajorityAdapted(task_name=task.name, prior=prior, n_train=len(train), config=self.to_dict(),
                               fit_seconds=time.perf_counter() - t0)
