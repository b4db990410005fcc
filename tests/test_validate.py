"""`adaptlab validate`: shipped tasks pass; planted problems are found and reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from adaptlab.cli.render import validation_report
from adaptlab.data import Task
from adaptlab.data.validate import validate_task

SHIPPED = ["sst2", "agnews", "rte", "cb", "boolq", "multi30k-en-de"]


def make_task(folder: Path, train: list[dict], test: list[dict], **over) -> Task:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    kwargs = dict(name="t", type="classification", input="{{ text }}", labels={"0": "neg", "1": "pos"},
                  metric="accuracy", source=folder / "task.yaml",
                  data={"train": "train.jsonl", "test": "test.jsonl", "dev_size": 0})
    return Task(**{**kwargs, **over})


def rows(n: int, prefix: str = "t") -> list[dict]:
    return [{"text": f"{prefix} number {i}", "label": i % 2} for i in range(n)]


def as_text(report) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    main, problems = validation_report(report)
    for item in main + problems:
        console.print(item)
    return console.export_text()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tasks_validate_without_errors(shared_data: Path, tasks_dir: Path, name: str) -> None:
    report = validate_task(tasks_dir / f"{name}.yaml")
    assert report.ok, report.errors
    for split in ("train", "dev", "test"):
        stats = report.splits[split]
        assert stats.rows > 0
        if report.type == "classification":
            assert sum(stats.labels.values()) == stats.rows and not stats.unknown_labels


def test_sst2_counts_and_speed(shared_data: Path, tasks_dir: Path) -> None:
    start = time.perf_counter()
    report = validate_task(tasks_dir / "sst2.yaml")
    elapsed = time.perf_counter() - start
    rows = {s: r.rows for s, r in report.splits.items()}
    assert rows == {"train": 6920, "dev": 872, "test": 1821}
    assert sum(report.splits["train"].labels.values()) == 6920
    assert set(report.splits["test"].labels) == {"0", "1"}
    assert elapsed < 5, f"validating SST-2 took {elapsed:.1f}s"  # about 0.3s on one free core
    text = as_text(report)
    assert "6,920" in text and "label 1" in text


def test_leakage_duplicates_and_duplicate_ids(tmp_path: Path) -> None:
    train = rows(50)
    test = rows(10, "held out")
    train.append({"text": "  Held OUT number 3 ", "label": 1})  # planted test example (case/space differ)
    train += [{"text": "t number 5", "label": 0, "id": "a"}, {"text": "again", "label": 1, "id": "a"},
              {"text": "again2", "label": 0, "id": "a"}]
    report = validate_task(make_task(tmp_path, train, test))
    assert report.ok  # data problems, not broken config: warnings
    assert report.splits["test"].overlap == {"train": 1}
    assert any("leakage" in w and "test" in w for w in report.warnings)
    train_stats = report.splits["train"]
    assert train_stats.duplicates == 1 and train_stats.conflicting_duplicates == 1
    assert train_stats.duplicate_ids == 2
    assert any("repeat an earlier input" in w for w in report.warnings)


def test_unknown_and_missing_labels_are_errors(tmp_path: Path) -> None:
    test = rows(6) + [{"text": "x", "label": 2}, {"text": "y", "label": 2}, {"text": "z"}]
    report = validate_task(make_task(tmp_path, rows(20), test))
    assert not report.ok
    assert report.splits["test"].unknown_labels == {"2": 2}
    assert report.splits["test"].missing_labels == 1
    assert any("'2' ×2" in e and "label_map" in e for e in report.errors)
    assert "unknown label 2" in as_text(report)


def test_malformed_rows_are_collected_with_lines_and_capped(tmp_path: Path) -> None:
    task = make_task(tmp_path, rows(10), rows(5))
    lines = [json.dumps(r) for r in rows(40)]
    for i in range(0, 40, 2):
        lines[i] = "{broken"
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = validate_task(task)
    assert report.splits["train"].malformed == 20 and report.splits["train"].rows == 20
    assert any("train.jsonl:3" in e and "invalid JSON" in e for e in report.errors)
    assert len(report.errors) <= 21  # capped list plus a summary line


def test_template_field_checks(tmp_path: Path) -> None:
    guarded = "{% if title %}{{ title }}: {% endif %}{{ text }}"
    assert validate_task(make_task(tmp_path, rows(10), rows(4, "test"), input=guarded)).warnings == []
    report = validate_task(make_task(tmp_path, rows(10), rows(4), input="{{ txt }}"))
    assert any("field 'txt'" in e and "did you mean 'text'" in e for e in report.errors)
    some = rows(10) + [{"title": "no text here", "label": 0}]
    report = validate_task(make_task(tmp_path, some, rows(4)))
    assert report.ok and report.splits["train"].missing_fields == {"text": 1}
    assert report.splits["train"].empty_inputs == 1


def test_context_length_with_tokenizer(tmp_path: Path) -> None:
    train = rows(10) + [{"text": "word " * 50, "label": 0}]
    report = validate_task(make_task(tmp_path, train, rows(3)), tokenizer=lambda t: t.split(), max_tokens=20)
    assert report.splits["train"].too_long == 1 and report.splits["train"].max_input_tokens == 50
    assert report.splits["test"].too_long == 0
    assert any("20-token" in w for w in report.warnings)


def test_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    task = make_task(tmp_path, rows(10), rows(4))
    (tmp_path / "test.jsonl").unlink()
    report = validate_task(task)
    assert not report.ok and any("file not found" in e for e in report.errors)
    assert report.splits["train"].rows == 10


def test_empty_source_file_is_an_error(tmp_path: Path) -> None:
    report = validate_task(make_task(tmp_path, rows(10), []))
    assert not report.ok and any("holds no rows" in e for e in report.errors)
