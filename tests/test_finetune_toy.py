"""A tiny learnable classification task for the fine-tuning tests (helpers + a sanity test).

Inputs are single words; colours answer " yes", animals " no". A 2-layer random Llama can learn this
in a few dozen steps, so tests can check that the loss falls and the dev metric moves.
"""

from __future__ import annotations

import json
from pathlib import Path

COLOURS = ["red", "blue", "green", "pink", "gold", "gray", "teal", "navy"]
ANIMALS = ["cat", "dog", "cow", "pig", "hen", "fox", "owl", "elk"]

TASK_YAML = """\
name: toy-colours
type: classification
instruction: Is the word a colour?
data:
  train: train.jsonl
  dev: dev.jsonl
  test: test.jsonl
  format: jsonl
input: "Word: {{ word }}"
label_field: label
labels: {colour: "yes", animal: "no"}
metric: accuracy
"""


def one_thread_torch():
    """Generator for a fixture: torch on one thread while it is active (restored afterwards).

    The test machine has 2 cores shared with other work; OpenMP threads spinning against each other
    make tiny models 10-30x slower than one thread.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rows(n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(n):
        words, label = (COLOURS, "colour") if i % 2 == 0 else (ANIMALS, "animal")
        rows.append({"id": f"r{offset + i}", "word": words[(i // 2 + offset) % len(words)], "label": label})
    return rows


def write_toy_task(folder: Path, *, n_train: int = 48, n_dev: int = 16, n_test: int = 16) -> Path:
    """Write task.yaml + train/dev/test JSONL into ``folder``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", _rows(n_train, 0)), ("dev", _rows(n_dev, 1000)), ("test", _rows(n_test, 2000))):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = folder / "task.yaml"
    path.write_text(TASK_YAML, encoding="utf-8")
    return path


def test_toy_task_loads_balanced(tmp_path: Path) -> None:
    from adaptlab.data import load_splits, load_task

    task = load_task(write_toy_task(tmp_path))
    splits = load_splits(task)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (48, 16, 16)
    labels = [task.label_of(ex) for ex in splits.train]
    assert labels.count("colour") == labels.count("animal") == 24
    assert task.render_input(splits.train[0]) == "Word: red"


GEN_TASK_YAML = """\
name: toy-copy
type: generation
instruction: Repeat the word.
data:
  train: train.jsonl
  dev: dev.jsonl
  test: test.jsonl
  format: jsonl
input: "Word: {{ word }}"
target: "{{ word }}"
metric: exact_match
"""


def write_toy_generation_task(folder: Path) -> Path:
    """The same words as a copy task (generation): input ``Word: red`` -> reference ``red``."""
    write_toy_task(folder)
    path = folder / "task.yaml"
    path.write_text(GEN_TASK_YAML, encoding="utf-8")
    return path
