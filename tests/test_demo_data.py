"""The built-in demo task's data (src/adaptlab/demo/): size, balance, hygiene and variety."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from importlib import resources

import pytest
import yaml

SPLITS = ("train", "test")
ROW_KEYS = {"id", "text", "label"}
OPTIONAL_KEYS = {"hard"}


def _demo_file(name: str):
    return resources.files("adaptlab").joinpath("demo", name)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for split in SPLITS:
        lines = _demo_file(f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        out[split] = [json.loads(line) for line in lines if line.strip()]
    return out


@pytest.fixture(scope="module")
def task_yaml() -> dict:
    return yaml.safe_load(_demo_file("task.yaml").read_text(encoding="utf-8"))


def test_rows_have_the_documented_fields(rows):
    for split, items in rows.items():
        for i, row in enumerate(items, 1):
            assert ROW_KEYS <= set(row) <= ROW_KEYS | OPTIONAL_KEYS, f"{split} line {i}: {sorted(row)}"
            assert isinstance(row["text"], str) and row["text"].strip(), f"{split} line {i}: empty text"
            assert row["text"] == row["text"].strip(), f"{split} line {i}: untrimmed text"
            assert isinstance(row["label"], str)
            assert row.get("hard", True) is True, f"{split} line {i}: 'hard' is only ever true"


def test_counts_and_stratification(rows):
    train, test = Counter(r["label"] for r in rows["train"]), Counter(r["label"] for r in rows["test"])
    assert len(rows["train"]) + len(rows["test"]) >= 600
    assert set(train) == set(test)
    assert len(train) >= 5
    for label in train:
        assert test[label] >= 25, f"{label}: only {test[label]} test examples"
        share = test[label] / (train[label] + test[label])
        assert 0.2 <= share <= 0.3, f"{label}: {share:.0%} in test"
    # roughly balanced but not perfectly (like real queues)
    sizes = [train[k] + test[k] for k in train]
    assert max(sizes) <= 1.5 * min(sizes)
    assert len(set(sizes)) > 1


def test_ids_unique_across_splits(rows):
    ids = [r["id"] for split in SPLITS for r in rows[split]]
    assert len(ids) == len(set(ids))


def test_no_duplicates_and_no_train_test_overlap(rows):
    for split in SPLITS:
        texts = Counter(_norm(r["text"]) for r in rows[split])
        dupes = [t for t, n in texts.items() if n > 1]
        assert not dupes, f"duplicate texts in {split}: {dupes[:5]}"
    overlap = {_norm(r["text"]) for r in rows["train"]} & {_norm(r["text"]) for r in rows["test"]}
    assert not overlap, f"test texts also in train: {sorted(overlap)[:5]}"


def test_labels_match_task_yaml(rows, task_yaml):
    labels = {str(k) for k in task_yaml["labels"]}
    used = {r["label"] for split in SPLITS for r in rows[split]}
    assert used == labels, f"unused: {labels - used}, undeclared: {used - labels}"
    verbalizers = [str(v) for v in task_yaml["labels"].values()]
    assert len({v.split()[0].lower() for v in verbalizers}) == len(verbalizers), "verbalizers share a first word"


def test_task_yaml_shape(task_yaml):
    assert task_yaml["name"] == "demo-intents"
    assert task_yaml["type"] == "classification"
    assert task_yaml["data"] == {"train": "train.jsonl", "test": "test.jsonl", "format": "jsonl"}
    assert task_yaml["input"] == "{{text}}"
    assert task_yaml["label_field"] == "label"
    assert task_yaml["metric"] == "accuracy"
    assert task_yaml["instruction"].strip()


def test_lengths_vary(rows):
    words = [len(r["text"].split()) for split in SPLITS for r in rows[split]]
    assert min(words) <= 4 and max(words) >= 40
    assert statistics.pstdev(words) >= 6
    assert sum(w <= 4 for w in words) >= 20, "too few very short messages"
    assert sum(w >= 30 for w in words) >= 10, "too few long messages"
    for split in SPLITS:  # both splits see short and long messages
        w = [len(r["text"].split()) for r in rows[split]]
        assert min(w) <= 4 and max(w) >= 30, split


def test_hard_cases_in_both_splits(rows):
    total = sum(len(rows[s]) for s in SPLITS)
    hard = {s: [r for r in rows[s] if r.get("hard")] for s in SPLITS}
    for split in SPLITS:
        assert len(hard[split]) >= 10, split
        assert len({r["label"] for r in hard[split]}) >= 5, f"{split}: hard cases cover few intents"
    assert 0.05 <= (len(hard["train"]) + len(hard["test"])) / total <= 0.25


def test_builtin_task_loads(rows):
    """The loader (adaptlab.data) reads the shipped files as the raw JSON does."""
    from adaptlab.data import builtin_task, load_splits

    task = builtin_task("demo")
    assert task.name == "demo-intents"
    splits = load_splits(task, seed=0)
    assert len(splits.test) == len(rows["test"])
    assert len(splits.train) + len(splits.dev) == len(rows["train"])
    assert splits.dev, "the loader should carve a dev split from train"
    assert {task.label_of(ex) for ex in splits.test} == set(task.label_keys)
    first = splits.test[0]
    assert task.render_input(first) == next(r["text"] for r in rows["test"] if r["id"] == first.id)
