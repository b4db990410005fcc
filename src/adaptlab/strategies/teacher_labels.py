"""A distillation teacher's labels, cached per teacher so that cells, seeds, students and resumes share them.

The cache is one JSON-lines file per teacher under ``<cache_dir>/teacher/<digest>.jsonl``, the digest a hash of
what decides the teacher's answers (`teacher_identity`; the identity itself sits beside it as ``<digest>.json``).
Each line is one labelled input::

    {"id": "train:17", "label": "1", "input_tokens": 41.5, "output_tokens": 0.0, "seconds": 0.012, "flops": 1.2e9}

(``text`` instead of ``label`` for a generation task). Tokens, seconds and FLOPs are the teacher's usage for the
batch the input was labelled in, split evenly over the batch, so a cell that reuses a label still reports what
producing it cost. Lines are appended per batch, flushed and fsynced under an exclusive lock: a killed run loses
at most the batch in flight, and a torn last line is ignored on reading and cut away before the next append.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from adaptlab.files import write_json_atomic
from adaptlab.models.costs import forward_flops

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.strategies.artifacts import Adapted

log = logging.getLogger(__name__)

CACHE_VERSION = 1
LABEL_BATCH = 16
"""Inputs per teacher call (and per appended cache batch)."""


@dataclass(frozen=True)
class TeacherLabel:
    """The teacher's answer for one input and its share of the cost of the batch it came from."""

    id: str
    output: str
    """A label key (classification) or the generated text (generation)."""
    input_tokens: float
    output_tokens: float
    seconds: float
    flops: float | None = None

    def to_json(self, key: str) -> dict[str, Any]:
        return {"id": self.id, key: self.output, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "seconds": self.seconds, "flops": self.flops}

    @classmethod
    def from_json(cls, rec: Any, key: str) -> TeacherLabel:
        """The label of a cache line (ValueError when it is not one)."""
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or not isinstance(rec.get(key), str):
            raise ValueError(f"not a teacher label with a string '{key}'")  # noqa: TRY004 - a bad line, not a bug
        flops = rec.get("flops")
        return cls(rec["id"], rec[key], float(rec["input_tokens"]), float(rec["output_tokens"]),
                   float(rec["seconds"]), None if flops is None else float(flops))


def teacher_identity(name: str, options: dict[str, Any], model: dict[str, Any], task: dict[str, Any],
                     read: dict[str, Any]) -> dict[str, Any]:
    """What decides a teacher's answers: its strategy and (normalised) options, its model's name and serving
    identity, the task (name, templates, labels), and what it read (``read``: the gold example ids shown, and
    the seed and dev ids where its fit drew or searched with them)."""
    return {"version": CACHE_VERSION, "strategy": name, "options": options, "model": model, "task": task,
            "read": read}


def cache_path(cache_dir: Path, identity: dict[str, Any]) -> Path:
    """``<cache_dir>/teacher/<sha256(identity)[:16]>.jsonl``; writes the identity beside it the first time."""
    text = json.dumps(identity, sort_keys=True, ensure_ascii=True, default=str)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    folder = Path(cache_dir) / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    about = folder / f"{digest}.json"
    if not about.exists():
        write_json_atomic(about, identity)
    return folder / f"{digest}.jsonl"


def _lock(f: IO[bytes]) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: appends are not shared between processes there
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except OSError as exc:  # a filesystem without locks: appends still go whole, one write per batch
        log.debug("cannot lock %s: %s", f.name, exc)


class LabelCache:
    """A teacher's labels by example id, backed by the JSON-lines file ``path`` (None: in memory only).
    ``key`` is the output's name in a line: ``label`` or ``text``."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path, self.key = path, key
        self.labels: dict[str, TeacherLabel] = self._read() if path is not None else {}

    def _read(self) -> dict[str, TeacherLabel]:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        body, _, torn = raw.rpartition(b"\n")
        if torn:
            log.warning("%s: ignoring a torn last line (a run was killed while writing it)", self.path)
        out: dict[str, TeacherLabel] = {}
        for n, line in enumerate(body.split(b"\n") if body else [], 1):
            try:
                label = TeacherLabel.from_json(json.loads(line), self.key)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s:%d: ignoring a bad cache line (%s)", self.path, n, exc)
                continue
            out.setdefault(label.id, label)
        return out

    def add(self, labels: Sequence[TeacherLabel]) -> None:
        """Keep ``labels`` and append them to the file in one write (flushed and fsynced)."""
        for label in labels:
            self.labels.setdefault(label.id, label)
        if self.path is None or not labels:
            return
        data = "".join(json.dumps(lab.to_json(self.key)) + "\n" for lab in labels).encode("utf-8")
        with open(self.path, "a+b") as f:
            _lock(f)  # released when the file closes
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a torn last line: cut it away before appending
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


@dataclass(frozen=True)
class LabelRun:
    """What labelling a pool did: labels from the cache, labels the teacher produced now."""

    cached: int
    labelled: int


_COUNTERS = ("prompt_tokens", "computed_tokens", "generated_tokens", "reported_input_tokens",
             "reported_output_tokens")


def label_pool(teacher: Adapted, pool: Sequence[Example], cache: LabelCache, *,
               batch_size: int = LABEL_BATCH) -> LabelRun:
    """Label the inputs of ``pool`` that ``cache`` lacks with ``teacher.predict``, ``batch_size`` at a time,
    appending each batch to the cache; logs progress per batch."""
    todo = [ex for ex in pool if ex.id not in cache.labels]
    cached = len(pool) - len(todo)
    lm = teacher.lm
    n_params = getattr(lm, "n_params", None)
    if cached:
        log.info("teacher labels: %d of %d from the cache", cached, len(pool))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        before = {k: getattr(lm.usage, k) for k in _COUNTERS}
        t0 = time.perf_counter()
        preds = teacher.predict(batch)
        seconds = time.perf_counter() - t0
        if [p.id for p in preds] != [ex.id for ex in batch]:
            raise RuntimeError(f"{type(teacher).__name__}.predict returned predictions out of order")
        d = {k: getattr(lm.usage, k) - v for k, v in before.items()}
        api = d["reported_input_tokens"] or d["reported_output_tokens"]
        tokens_in = d["reported_input_tokens"] if api else d["prompt_tokens"]
        tokens_out = d["reported_output_tokens"] if api else d["generated_tokens"]
        computed = d["computed_tokens"] or d["prompt_tokens"]
        flops = forward_flops(n_params, computed) / len(batch) if n_params else None
        n = len(batch)
        cache.add([TeacherLabel(p.id, p.pred, tokens_in / n, tokens_out / n, seconds / n, flops) for p in preds])
        log.info("teacher labelled %d/%d (cached %d)", cached + start + n, len(pool), cached)
    return LabelRun(cached=cached, labelled=len(todo))
