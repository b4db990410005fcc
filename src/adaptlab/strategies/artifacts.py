"""What every strategy's `fit` returns: an `Adapted` artifact, bound to the model it predicts with, and the
loaders that bring a saved one back.

An `Adapted` predicts through its own `LM` (``adapted.lm``: the shared model for prompts, its own weights for
a fine-tune), reports its cost, and saves itself to a folder holding ``adapted.json`` whose ``"kind"`` names
its loader. A loader gets a `ModelBinder` to build the LM of the model an artifact names (prompt artifacts);
artifacts that carry weights load them themselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    from adaptlab.data.example import Example
    from adaptlab.lm.base import LM

log = logging.getLogger(__name__)

ARTIFACT_FILE = "adapted.json"


@dataclass
class Prediction:
    """One example's prediction.

    ``pred`` is a label key (classification) or the extracted answer text (generation). ``scores`` are per-label
    probabilities after any calibration (label key -> probability); ``logprobs`` the raw per-label
    log-likelihoods as the LM returned them (summed over tokens).
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
    """An adapted model: prompts, calibration, or weights, bound to the `LM` it predicts through."""

    kind: str
    """The artifact kind (``adapted.json``'s ``"kind"``), which names its loader."""
    strategy: str
    """The registry name of the strategy that made it."""
    model_name: str
    """The model it adapts (`adaptlab.models.load_model` name, or an API model's name)."""
    config: dict[str, Any]
    """The strategy options it was fitted with."""

    @property
    def lm(self) -> LM:
        """The LM its predictions run through (usage counters, parameters, prefix keeping)."""
        ...

    def predict(self, examples: Sequence[Example], *, progress: bool = False) -> list[Prediction]:
        """Predictions for ``examples`` in order."""
        ...

    def cost(self) -> dict[str, Any]:
        """Cost facts: ``{"train": {...}, "query": {...}, "labels": {...}, "fit": {...}, "search": {...} | None}``.

        ``train`` may hold seconds, flops, peak_memory_bytes, trainable_params; ``query`` may hold prompt_tokens
        (mean), prefix_shared, demonstrations. ``labels`` = ``{"train": n, "dev": m}``: every labelled example the
        fit read (training examples shown or trained on; dev examples that chose a checkpoint, stopped training,
        calibrated or searched). Missing keys are filled by the evaluator (no ``labels``: n_train is assumed).
        """
        ...

    def save(self, directory: str | Path) -> Path:
        """Write the artifact into ``directory`` (``adapted.json`` + any files); returns the folder."""
        ...


class ModelBinder(Protocol):
    """Builds the LM for a model name an artifact names (with the caller's backend settings)."""

    def __call__(self, model_name: str) -> LM: ...


ArtifactLoader = Callable[[Path, dict[str, Any], ModelBinder], Adapted]
_LOADERS: dict[str, ArtifactLoader] = {}


def register_artifact(kind: str, loader: ArtifactLoader) -> None:
    """Register ``loader(directory, adapted_json, binder) -> Adapted`` for artifacts of ``kind``."""
    _LOADERS[kind] = loader


def registered_kinds() -> list[str]:
    return sorted(_LOADERS)


def read_artifact_json(directory: str | Path) -> dict[str, Any]:
    """``adapted.json`` of an artifact folder, checked to be an object with a string ``kind``."""
    path = Path(directory) / ARTIFACT_FILE
    if not path.is_file():
        raise AdaptlabError(f"no {ARTIFACT_FILE} in {directory}", file=path,
                            hint="pass a folder written by `adaptlab prompt`, `adaptlab finetune` or a compare run")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdaptlabError(f"invalid JSON: {e.msg}", file=path, line=e.lineno) from None
    except (OSError, UnicodeDecodeError) as e:
        raise AdaptlabError(f"cannot read the artifact: {e}", file=path) from None
    if not isinstance(data, dict):
        raise AdaptlabError("adapted.json must hold a JSON object", file=path)
    if not isinstance(data.get("kind"), str):
        raise AdaptlabError("missing string field 'kind'", file=path, field="kind")
    return data


def load_adapted(directory: str | Path, binder: ModelBinder | None = None) -> Adapted:
    """Load the artifact saved in ``directory`` (dispatching on ``adapted.json``'s ``"kind"``); ``binder`` builds
    the LM of a prompt artifact's model (default: the model's local weights, built on first prediction).
    Strategies register their kinds when `adaptlab.strategies` is imported (plugins when they are loaded)."""
    from adaptlab.config import unknown_key

    data = read_artifact_json(directory)
    kind = data["kind"]
    if kind not in _LOADERS:
        err = unknown_key(kind, _LOADERS, file=Path(directory) / ARTIFACT_FILE, what="artifact kind")
        err.field = "kind"
        if not _LOADERS:
            err.hint = "import adaptlab.strategies first (it registers the built-in kinds)"
        raise err
    try:
        return _LOADERS[kind](Path(directory), data, binder or local_binder)
    except (KeyError, TypeError, ValueError) as e:
        raise malformed_artifact(kind, Path(directory) / ARTIFACT_FILE, e) from None


def malformed_artifact(kind: str, path: Path, exc: Exception) -> AdaptlabError:
    """The one-line error for an ``adapted.json`` that lacks a key or holds a value of the wrong type."""
    if isinstance(exc, KeyError):
        key = str(exc.args[0]) if exc.args else "?"
        return AdaptlabError(f"malformed {kind} artifact: missing key '{key}'", file=path, field=key,
                             hint="the folder was not written by adaptlab, or the file was edited")
    return AdaptlabError(f"malformed {kind} artifact: {exc}", file=path,
                         hint="the folder was not written by adaptlab, or the file was edited")


def local_binder(model_name: str) -> LM:
    """The default `ModelBinder`: the model's local weights (`adaptlab.lm.factory.build_lm`)."""
    from adaptlab.lm.factory import build_lm

    return build_lm(model_name)


def artifact_path(directory: str | Path, name: Any, *, field: str) -> Path:
    """``directory / name`` for a file or folder an ``adapted.json`` names, refusing any path that leaves the
    artifact folder (absolute paths, ``..``, symlinks pointing outside)."""
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
