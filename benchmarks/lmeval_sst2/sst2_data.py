"""Dataset loader for the ``adaptlab_sst2`` lm-evaluation-harness task (see ``sst2.yaml``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any


def read_sst2(path: Path) -> list[dict[str, Any]]:
    """``{"label", "sentence"}`` rows of an SST-2 ``<label> <sentence>`` file, in file order."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append({"label": int(line[0]), "sentence": line[2:].strip()})
    return rows


def load(data_dir: str, fewshot_seed: int = 0, **_: Any) -> Any:
    """A ``DatasetDict``: ``train`` (shuffled with ``fewshot_seed``) and ``test`` (file order)."""
    import datasets

    train = read_sst2(Path(data_dir) / "stsa.binary.train")
    random.Random(int(fewshot_seed)).shuffle(train)
    test = read_sst2(Path(data_dir) / "stsa.binary.test")
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                                 "test": datasets.Dataset.from_list(test)})
