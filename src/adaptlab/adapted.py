"""The shared `Adapted` contract: what every strategy's `fit` returns, prompting or fine-tuning alike.

An `Adapted` predicts through an `LM`, reports its cost, and saves itself to a folder holding
``adapted.json`` whose ``"kind"`` names the loader that `load_adapted` dispatches to. Loaders live in
a small registry (`register_artifact`); ``"prompt"`` is registered by `adaptlab.prompting`, a
fine-tuning module registers its own kind (e.g. ``"finetuned"``) the same way.

Raw inputs: an example whose ``fields`` contain `RAW_INPUT_FIELD` is used verbatim as the rendered
model input (no input template); `adaptlab predict DIR --text ...` relies on this.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from adaptlab.errors import AdaptlabError, ResourceError, unknown_key_error

if TYPE_CHECKING:
    from adaptlab.data import Example
    from adaptlab.lm.base import LM

log = logging.getLogger(__name__)

ARTIFACT_FILE = "adapted.json"
RAW_INPUT_FIELD = "__input__"
"""Field name marking an example's already-rendered input text (bypasses the input template)."""

# Modules that register artifact kinds when imported; tried when a kind is not yet registered.
_BUILTIN_MODULES = ("adaptlab.prompting", "adaptlab.finetune", "adaptlab.finetuning")


@dataclass
class Prediction:
    """One example's prediction.

    ``pred`` is a label key (classification) or the extracted answer text (generation).
    ``scores`` are per-label probabilities after any calibration (label key -> probability);
    ``logprobs`` the raw per-label log-likelihoods as the LM returned them (summed over tokens).
    """

    id: str
    pred: str
    scores: dict[str, float] | None = None
    logprobs: dict[str, float] | None = None
    raw: str | None = None
    """Generation: the raw generated text before answer extraction."""
    prompt_tokens: int = 0
    """Tokens of the context this example was scored or generated from."""
    scored_tokens: int = 0
    """Tokens scored (all label continuations) or generated for this example."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Adapted(Protocol):
    """An adapted model: prompts, calibration, or weights, predicting through an `LM`."""

    kind: str
    model_name: str
    """The model this artifact is for (`adaptlab.models.load_model` name)."""

    def predict(
        self, examples: Sequence["Example"], lm: "LM", *, progress: bool = False
    ) -> list[Prediction]:
        """Predictions for ``examples`` in order."""
        ...

    def cost(self) -> dict[str, Any]:
        """Cost facts: ``{"train": {...}, "query": {...}, ...}``.

        ``train`` may hold seconds, flops, peak_memory_bytes, trainable_params, artifact_bytes;
        ``query`` may hold prompt_tokens (mean), prefix_shared, demonstrations. Missing keys are
        filled by the evaluator.
        """
        ...

    def save(self, directory: str | Path) -> Path:
        """Write the artifact into ``directory`` (``adapted.json`` + any files); returns the folder."""
        ...


ArtifactLoader = Callable[[Path, dict[str, Any]], Adapted]
_LOADERS: dict[str, ArtifactLoader] = {}


def register_artifact(kind: str, loader: ArtifactLoader) -> None:
    """Register ``loader(directory, adapted_json) -> Adapted`` for artifacts of ``kind``."""
    _LOADERS[kind] = loader


def registered_kinds() -> list[str]:
    return sorted(_LOADERS)


def load_adapted(directory: str | Path) -> Adapted:
    """Load the artifact saved in ``directory`` by dispatching on ``adapted.json``'s ``"kind"``."""
    path = Path(directory) / ARTIFACT_FILE
    if not path.is_file():
        raise AdaptlabError(f"no {ARTIFACT_FILE} in {directory}", file=path,
                            hint="pass a folder written by `adaptlab run` / `adaptlab prompt`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdaptlabError(f"invalid JSON: {e.msg}", file=path, line=e.lineno) from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        raise AdaptlabError("missing string field 'kind'", file=path, field="kind")
    if kind not in _LOADERS:
        for mod in _BUILTIN_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError:
                continue
            if kind in _LOADERS:
                break
    if kind not in _LOADERS:
        err = unknown_key_error(kind, _LOADERS, file=path, what="artifact kind")
        err.field = "kind"
        raise err
    return _LOADERS[kind](path.parent, data)


def artifact_path(directory: str | Path, name: Any, *, field: str) -> Path:
    """``directory / name`` for a file or folder an ``adapted.json`` names, refusing any path that
    leaves the artifact folder (absolute paths, ``..``, symlinks pointing outside)."""
    directory = Path(directory)
    where = directory / ARTIFACT_FILE
    if not isinstance(name, str) or not name.strip():
        raise AdaptlabError(f"'{field}' must be a file name inside the artifact folder", file=where, field=field)
    rel = Path(name)
    inside = directory.resolve()
    target = (directory / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or (target != inside and inside not in target.parents):
        raise AdaptlabError(f"'{field}' points outside the artifact folder: {name!r}", file=where, field=field,
                            hint="an artifact may only reference files inside its own folder")
    return directory / rel


def prepare_output_dir(path: str | Path, *, field: str = "out_dir") -> Path:
    """Create the output folder ``path`` (and parents) and check that files can be written in it.

    Raises `ResourceError` naming the folder when it cannot be used: a file is in the way, a parent
    is a file, or the folder is not writable (read-only mount, permissions).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResourceError("the output path is a file, not a folder", file=path, field=field,
                            hint="choose a folder name that does not exist yet, or an existing folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".adaptlab-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a parent of it is a file"
        raise ResourceError(f"cannot write the output folder: {reason}", file=path, field=field,
                            hint="choose a writable folder") from None
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` via a temp file + os.replace (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def render_input(template: str, fields: Mapping[str, Any]) -> str:
    """Render an example's input: `RAW_INPUT_FIELD` verbatim if present, else the Jinja2 template.

    Mirrors `Task.render_input` so an artifact can render inputs without the task YAML.
    """
    if RAW_INPUT_FIELD in fields:
        return str(fields[RAW_INPUT_FIELD])
    from adaptlab.tasks import compile_template

    return compile_template(template).render(dict(fields))
