"""``distill``: a prompted teacher (usually a large model) labels a pool of unlabelled inputs, and a student (a
fine-tuning strategy, usually on a small model) trains on those labels.

```yaml
- name: distill
  model: small
  options:
    teacher: {name: few_shot, model: large, options: {k: 8}}
    student: {name: lora, options: {rank: 8}}
    pool: [64, 256]          # the learning-curve axis: pools nest (64 within 256)
```

The pool is the task's ``data.unlabeled`` inputs (``source: auto`` when it has them), else the training split's
inputs with their labels hidden, less the dev split, in one fixed order independent of the cell's seed. Teacher
labels go through a cache shared by the run's cells (`adaptlab.strategies.teacher_labels`), so seeds, students and
pools reuse them; the cost of producing them is charged to every cell that uses them. The artifact is the
student's, saved in ``student/`` beside an ``adapted.json`` of kind ``distilled``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

import adaptlab
from adaptlab.config import Invalid
from adaptlab.data.example import normalize_label
from adaptlab.data.splits import check_unique_ids, load_unlabeled, train_inputs
from adaptlab.errors import ConfigError, DataError
from adaptlab.files import write_json_atomic
from adaptlab.lm.base import token_price_of
from adaptlab.strategies.artifacts import (ARTIFACT_FILE, Adapted, ModelBinder, artifact_path, load_adapted,
                                           read_artifact_json)
from adaptlab.strategies.base import ArtifactKind, FitContext, LabelUse, StrategyConfig, strategy
from adaptlab.strategies.compose import StrategyRef
from adaptlab.strategies.teacher_labels import LabelCache, cache_path, label_pool, teacher_identity

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.data.task import Task
    from adaptlab.lm.base import LM
    from adaptlab.strategies.artifacts import Prediction

log = logging.getLogger(__name__)

KIND = "distilled"
STUDENT_DIR = "student"
POOL_ORDER_SALT = "adaptlab-distill-pool"
"""The pool's order is a hash of this and the example id: fixed across seeds, students and runs, so pools nest."""


@dataclass
class Distilled:
    """A student trained on a teacher's labels: predicts, saves and loads as the student; its cost adds the
    teacher's (`teacher`), its labels and ``search`` document describe the distillation."""

    kind: ClassVar[str] = KIND

    student: Adapted
    options: dict[str, Any]
    """The distill options it was fitted with."""
    teacher: dict[str, Any]
    """Teacher cost: seconds, flops, peak_memory_bytes, api_input_tokens, api_output_tokens, token_price, cached,
    labelled."""
    labels: dict[str, int]
    search: dict[str, Any]
    teacher_fit: dict[str, Any] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        return "distill"

    @property
    def model_name(self) -> str:
        return self.student.model_name

    @property
    def config(self) -> dict[str, Any]:
        return {**self.options, "student_config": self.student.config}

    @property
    def lm(self) -> LM:
        return self.student.lm

    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        return self.student.predict(examples, progress=progress)

    def cost(self) -> dict[str, Any]:
        own = dict(self.student.cost() or {})
        train = dict(own.get("train") or {})
        t = self.teacher
        train.update({
            "seconds": _plus(train.get("seconds"), t.get("seconds")),
            "flops": _plus(train.get("flops"), t.get("flops")),
            "peak_memory_bytes": _max(train.get("peak_memory_bytes"), t.get("peak_memory_bytes")),
            "student_seconds": train.get("seconds"), "student_flops": train.get("flops"),
            "teacher_seconds": t.get("seconds"), "teacher_flops": t.get("flops"),
            "api_input_tokens": t.get("api_input_tokens"), "api_output_tokens": t.get("api_output_tokens"),
            "token_price": t.get("token_price"), "teacher_cached": t.get("cached"),
            "teacher_labelled": t.get("labelled"),
        })
        return {**own, "train": train, "labels": dict(self.labels), "search": self.search,
                "fit": {"method": "distill", "student": own.get("fit"), "teacher": self.teacher_fit}}

    def to_json(self, student_json: dict[str, Any]) -> dict[str, Any]:
        doc = {"kind": KIND, "adaptlab_version": adaptlab.__version__, "model": self.model_name,
               "strategy": "distill", "config": self.options, "student": STUDENT_DIR,
               "distill": {"teacher": self.teacher, "labels": self.labels, "search": self.search,
                           "teacher_fit": self.teacher_fit}}
        if "task" in student_json:  # `adaptlab predict` renders --text through the input template it names
            doc["task"] = student_json["task"]
        return doc

    def save(self, directory: str | Path) -> Path:
        """The student into ``student/``, then ``adapted.json`` (last: an incomplete save never looks complete)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ARTIFACT_FILE).unlink(missing_ok=True)
        saved = self.student.save(directory / STUDENT_DIR)
        write_json_atomic(directory / ARTIFACT_FILE, self.to_json(read_artifact_json(saved)))
        return directory


def load_distilled(directory: Path, data: dict[str, Any], binder: ModelBinder) -> Distilled:
    """Loader for ``kind: distilled`` artifacts: the student folder loads by its own kind."""
    student = load_adapted(artifact_path(directory, data["student"], field="student"), binder)
    d = data["distill"]
    return Distilled(student=student, options=dict(data["config"]), teacher=dict(d["teacher"]),
                     labels=dict(d["labels"]), search=dict(d["search"]), teacher_fit=dict(d.get("teacher_fit") or {}))


DISTILLED_ARTIFACT = ArtifactKind(KIND, load_distilled)


@strategy("distill", family="finetune", artifact=DISTILLED_ARTIFACT, experiment_defaults=("epochs",), arm="distill")
class DistillConfig(StrategyConfig):
    """Distil a prompted teacher into a fine-tuned student trained on the teacher's labels of unlabelled inputs."""

    teacher: StrategyRef
    """The prompting strategy that labels the pool and its model role, e.g.
    ``{name: few_shot, model: large, options: {k: 8}}``."""
    student: StrategyRef
    """The fine-tuning strategy trained on the teacher's labels, e.g. ``{name: lora, options: {rank: 8}}``;
    ``model`` null: the entry's model."""
    pool: int = Field(ge=1)
    """Unlabelled inputs the teacher labels (the learning-curve axis: ``pool: [64, 256]``; smaller pools are
    prefixes of larger ones)."""
    source: Literal["auto", "unlabeled", "train"] = "auto"
    """Where the pool's inputs come from: the task's ``data.unlabeled`` (``auto``: when the task has it), else the
    training split's inputs with their labels hidden (less the dev split)."""
    mix_gold: bool = False
    """Also train the student on the cell's gold training examples (gold wins over the teacher's label of the
    same example)."""
    epochs: int | None = Field(None, ge=1)
    """Student epochs where the student's options do not set them (the experiment's ``epochs``)."""

    _student: StrategyConfig | None = PrivateAttr(default=None)

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: StrategyRef) -> StrategyRef:
        return v.require_family("prompt", "the teacher")

    @field_validator("student")
    @classmethod
    def _student_ref(cls, v: StrategyRef) -> StrategyRef:
        v.require_family("finetune", "the student")
        if v.info.arm != "finetune":
            raise Invalid(f"the student must be a plain fine-tuning strategy, got '{v.name}' ({v.info.arm})",
                          field="name")
        return v

    @model_validator(mode="after")
    def _student_epochs(self) -> DistillConfig:
        self._student = self.student.config_with_epochs(self.epochs)
        return self

    @property
    def student_config(self) -> StrategyConfig:
        """The student's config with the experiment's ``epochs`` where its options leave them out."""
        assert self._student is not None
        return self._student

    def label_use(self) -> LabelUse:
        """Mixed gold: each training size (from the teacher's k); else the teacher's (none: once per seed)."""
        use = self.teacher.config.label_use()
        if self.mix_gold:
            return LabelUse("train_sizes", use.k if use.mode != "none" else 0)
        return LabelUse("none", seeded=True) if use.mode == "none" else use

    def roles(self) -> set[str]:
        return self.teacher.roles() | self.student.roles()

    def learns_labels(self) -> bool:
        return self.student_config.learns_labels()

    def resolved_source(self, task: Task) -> str:
        """``unlabeled`` or ``train`` for ``task`` (ConfigError: ``unlabeled`` asked of a task without it)."""
        has = task.data.unlabeled is not None
        if self.source == "unlabeled" and not has:
            raise ConfigError(f"source 'unlabeled' needs the task's data.unlabeled; task '{task.name}' has none",
                              field="source", hint="add `unlabeled: FILE` under the task's data, or use source: train")
        return "unlabeled" if has and self.source != "train" else "train"

    def fit(self, task: Task, train: Sequence[Example], dev: Sequence[Example], ctx: FitContext) -> Distilled:
        """Fit the teacher, label the pool (through the cache), train the student on the labels."""
        if task.type == "generation":
            task.target_field()  # before any compute: the teacher's text must become the target
        source = self.resolved_source(task)
        pool = build_pool(task, source, self.pool, dev)
        use = self.teacher.config.label_use()
        shown = [] if use.mode == "none" else list(train[:use.k] if use.mode == "first_k" else train)
        teacher_ctx = ctx.with_role(self.teacher.model)
        log.info("distill: fitting the teacher %s on %d labelled examples", self.teacher.name, len(shown))
        teacher = self.teacher.config.fit(task, shown, dev, teacher_ctx)
        t_cost = teacher.cost() or {}
        key = "label" if task.type == "classification" else "text"
        path = None
        if ctx.cache_dir is not None:
            path = cache_path(ctx.cache_dir, self._identity(task, teacher_ctx, shown, dev, t_cost))
        cache = LabelCache(path, key)
        run = label_pool(teacher, pool, cache)
        outputs = {ex.id: cache.labels[ex.id].output for ex in pool}
        pseudo = [task.with_label(ex, outputs[ex.id]) if key == "label" else task.with_target(ex, outputs[ex.id])
                  for ex in pool]
        gold = list(train) if self.mix_gold else []
        gold_ids = {ex.id for ex in gold}
        data = [ex for ex in pseudo if ex.id not in gold_ids] + gold
        student_ctx = ctx.with_role(self.student.model)
        log.info("distill: training the student %s on %d teacher-labelled + %d gold examples", self.student.name,
                 len(data) - len(gold), len(gold))
        student = self.student_config.fit(task, data, dev, student_ctx)
        teacher_cost = _teacher_cost(t_cost, [cache.labels[ex.id] for ex in pool], teacher.lm, run.cached,
                                     run.labelled)
        s_labels = (student.cost() or {}).get("labels") or {}
        t_labels = t_cost.get("labels") or {}
        labels = {"train": len(train) if self.mix_gold else int(t_labels.get("train", len(shown))),
                  "dev": int(s_labels.get("dev", 0)) + int(t_labels.get("dev", 0))}
        agreement, gold_n = teacher_agreement(task, pool, outputs)
        search = {"kind": "distill", "teacher": self._ref_doc(self.teacher, teacher.model_name),
                  "student": self._ref_doc(self.student, student.model_name, self.epochs_given()),
                  "pool": self.pool, "pool_n": len(pool), "source": source, "mix_gold": self.mix_gold,
                  "gold_n": len(gold), "teacher_agreement": agreement,
                  "agreement_metric": "accuracy" if key == "label" else task.metric, "teacher_gold_n": gold_n,
                  "teacher_seconds": teacher_cost["seconds"], "teacher_fit_seconds": teacher_cost["fit_seconds"],
                  "teacher_label_seconds": teacher_cost["label_seconds"], "teacher_cached": run.cached,
                  "teacher_labelled": run.labelled, "label_counts": _label_counts(task, outputs),
                  "cache": path.name if path is not None else None}
        return Distilled(student=student, options=self.to_dict(), teacher=teacher_cost, labels=labels,
                         search=search, teacher_fit=dict(t_cost.get("fit") or {}))

    def _identity(self, task: Task, teacher_ctx: FitContext, shown: Sequence[Example], dev: Sequence[Example],
                  t_cost: dict[str, Any]) -> dict[str, Any]:
        spec = teacher_ctx.models.spec(teacher_ctx.role)
        read: dict[str, Any] = {"gold_ids": [ex.id for ex in shown]}
        if self.teacher.config.label_use().mode != "none":
            read["seed"] = teacher_ctx.seed  # demonstrations are drawn and ordered with the seed
        if int((t_cost.get("labels") or {}).get("dev", 0)):
            read["dev_ids"] = _digest([ex.id for ex in dev])
        return teacher_identity(self.teacher.name, self.teacher.config.to_dict(),
                                {"name": spec.name, "identity": spec.identity()},
                                {k: getattr(task, k) for k in ("name", "type", "instruction", "input", "labels",
                                                               "target")}, read)

    def epochs_given(self) -> dict[str, Any]:
        """``{"epochs": n}`` when the student takes the experiment's epochs, else empty."""
        return {"epochs": self.epochs} if self.student_config is not self.student.config else {}

    @staticmethod
    def _ref_doc(ref: StrategyRef, model_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"name": ref.name, "options": {**ref.options, **(extra or {})}, "model": ref.model,
                "model_name": model_name}


def build_pool(task: Task, source: str, size: int, dev: Sequence[Example]) -> list[Example]:
    """The first ``size`` inputs of ``source`` (``unlabeled`` or ``train``) less ``dev``, in the fixed pool order."""
    items = load_unlabeled(task) if source == "unlabeled" else train_inputs(task)
    drop = {ex.id for ex in dev}
    items = [ex for ex in items if ex.id not in drop]
    check_unique_ids(items, source, hint="the teacher's labels are kept by id: ids must be unique")
    if not items:
        raise DataError(f"no {source} inputs for the teacher to label", file=task.source,
                        field="data.unlabeled" if source == "unlabeled" else "data.train")
    order = sorted(items, key=lambda ex: hashlib.sha256(f"{POOL_ORDER_SALT}:{ex.id}".encode()).digest())
    if size > len(order):
        log.warning("distill: pool %d exceeds the %d %s inputs; using all of them", size, len(order), source)
    return order[:size]


def gold_of(task: Task, ex: Example) -> str | None:
    """The example's gold label key or target where it carries one (else None)."""
    if task.type == "classification":
        value = ex.fields.get(task.label_field or "label")
        label = normalize_label(value) if value is not None else None
        return label if label in task.labels else None
    value = ex.fields.get(task.target_field())
    return task.target_of(ex) if value is not None and str(value) != "" else None


def teacher_agreement(task: Task, pool: Sequence[Example], outputs: dict[str, str]) -> tuple[float | None, int]:
    """(the teacher's score against the pool's own gold where it has one, how many had one): accuracy for
    classification, the task metric for generation; None without gold. The gold is read for this report only."""
    pairs = [(outputs[ex.id], g) for ex in pool if (g := gold_of(task, ex)) is not None]
    if not pairs:
        return None, 0
    if task.type == "classification":
        return sum(h == g for h, g in pairs) / len(pairs), len(pairs)
    from adaptlab.metrics import compute

    return float(compute(task.metric, [h for h, _ in pairs], [g for _, g in pairs])), len(pairs)


def _teacher_cost(t_cost: dict[str, Any], labels: Sequence[Any], lm: Any, cached: int,
                  labelled: int) -> dict[str, Any]:
    fit = t_cost.get("train") or {}
    flops = [lab.flops for lab in labels]
    label_flops = sum(flops) if flops and all(f is not None for f in flops) else None
    return {"seconds": float(fit.get("seconds") or 0.0) + sum(lab.seconds for lab in labels),
            "fit_seconds": float(fit.get("seconds") or 0.0),
            "label_seconds": sum(lab.seconds for lab in labels),
            "flops": _plus(fit.get("flops"), label_flops),
            "peak_memory_bytes": fit.get("peak_memory_bytes"),
            "api_input_tokens": sum(lab.input_tokens for lab in labels),
            "api_output_tokens": sum(lab.output_tokens for lab in labels),
            "token_price": token_price_of(lm), "cached": cached, "labelled": labelled}


def _label_counts(task: Task, outputs: dict[str, str]) -> dict[str, int] | None:
    if task.type != "classification":
        return None
    counts = dict.fromkeys(task.label_keys, 0)
    for out in outputs.values():
        counts[out] = counts.get(out, 0) + 1
    return counts


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]


def _plus(a: Any, b: Any) -> Any:
    """a + b where known (None + x = x; both unknown: None)."""
    known = [x for x in (a, b) if isinstance(x, (int, float))]
    return sum(known) if known else None


def _max(a: Any, b: Any) -> Any:
    known = [x for x in (a, b) if isinstance(x, (int, float))]
    return max(known) if known else None
