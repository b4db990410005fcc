"""The examples a task reads: one `Example` per row, the three `Splits`, and label normalisation."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "dev", "test")
ID_FIELDS = ("id", "idx")
"""A row's own id is taken from the first of these fields it has."""
RAW_INPUT_FIELD = "__input__"
"""Field name marking an example's already-rendered input text (bypasses the input template)."""


@dataclass(frozen=True)
class Example:
    """One row of a split. ``fields`` feed the task's templates; ``source``/``line`` locate it."""

    id: str
    """Stable: the row's own ``id``/``idx`` field if any, else ``"<split>:<line>"``."""
    fields: Mapping[str, Any] = field(hash=False)
    source: str
    """File the row came from (or the Hugging Face dataset name)."""
    line: int
    """1-based line in the file where the row starts (row number for Hugging Face datasets)."""


@dataclass
class Splits:
    """The three splits of a task after carving."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]

    def __getitem__(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise KeyError(split)
        return getattr(self, split)

    def items(self) -> list[tuple[str, list[Example]]]:
        return [(s, getattr(self, s)) for s in SPLITS]


def normalize_label(value: Any) -> str:
    """A label value as a label key: booleans -> "true"/"false", 1.0 -> "1", strings stripped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()



def seeded_sample(items: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    """At most ``n`` items, a seeded random subset kept in original order (all when ``n`` is None)."""
    if n is None or n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]
