"""Data loading: every format, clear errors, carving, nested stratified subsets."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.data import Example, Task, load_split, load_splits, load_task, nested_subsets, stratified_order
from adaptlab.data.sources import clean_text, read_source
from adaptlab.errors import ConfigError, DataError

LABELS = {"0": "negative", "1": "positive"}


def make_task(folder: Path, data: dict, **over) -> Task:
    """A task whose YAML would live in ``folder`` (relative paths resolve there)."""
    kwargs = dict(name="t", type="classification", data=data, input="{{ text }}", labels=LABELS,
                  metric="accuracy", source=folder / "task.yaml")
    return Task(**{**kwargs, **over})


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def texts(examples: list[Example], field: str = "text") -> list[str]:
    return [e.fields[field] for e in examples]


def labelled(n_per_class: dict[str, int]) -> list[Example]:
    labels = [c for c, n in n_per_class.items() for _ in range(n)]
    return [Example(id=str(i), fields={"text": f"t{i}", "label": c}, source="mem", line=i + 1)
            for i, c in enumerate(labels)]


def label(e: Example) -> str:
    return e.fields["label"]


# ------------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------------

def test_jsonl_with_ids_and_blank_lines(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"text": "a", "label": 0, "idx": 7}\n\n{"text": "b", "label": 1}\n')
    rows = read_source(make_task(tmp_path, {"train": "train.jsonl"}), "train")
    assert texts(rows) == ["a", "b"]
    assert [r.id for r in rows] == ["7", "train:3"]  # own idx, else <split>:<line>
    assert [r.line for r in rows] == [1, 3]


def test_jsonl_broken_line_names_the_line(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(10)]
    lines[6] = '{"text": "t6" "label": 0}'
    path = write(tmp_path / "train.jsonl", "\n".join(lines) + "\n")
    task = make_task(tmp_path, {"train": "train.jsonl"})
    with pytest.raises(DataError) as info:
        read_source(task, "train")
    assert info.value.line == 7 and info.value.file == str(path)
    assert "invalid JSON: Expecting ',' delimiter" in info.value.one_line()
    collected: list[DataError] = []
    assert len(read_source(task, "train", errors=collected)) == 9
    assert [e.line for e in collected] == [7]


def test_csv_with_header(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", 'text,label\n"hello, world",1\n"multi\nline",0\nplain,1\n')
    rows = read_source(make_task(tmp_path, {"test": "d.csv"}), "test")
    assert texts(rows) == ["hello, world", "multi\nline", "plain"]
    assert [r.line for r in rows] == [2, 3, 5]  # a record's first line, across quoted newlines


def test_csv_and_tsv_without_header_use_columns(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", "1,good\n0,bad\n")
    write(tmp_path / "d.tsv", 'good film\t1\n"tab\tinside"\t0\n')
    task = make_task(tmp_path, {"train": {"path": "d.tsv", "columns": ["text", "label"]},
                                "test": {"path": "d.csv", "columns": ["label", "text"]}})
    assert texts(read_source(task, "test")) == ["good", "bad"]
    train = read_source(task, "train")
    assert texts(train) == ["good film", "tab\tinside"] and [task.label_of(e) for e in train] == ["1", "0"]
    with pytest.raises(ConfigError, match="columns"):  # no header and no column names
        read_source(make_task(tmp_path, {"train": {"path": "d.tsv", "header": False}}), "train")


def test_csv_header_renamed_by_columns_and_label_map(tmp_path: Path) -> None:
    write(tmp_path / "news.csv", 'Class Index,Title,Description\n3,"A &amp; B","It #39;s up\\down"\n1,T,D\n')
    task = make_task(tmp_path, {"test": {"path": "news.csv", "header": True,
                                         "columns": ["label", "title", "description"],
                                         "label_map": {1: "0", 3: "1"}, "clean": ["html", "backslashes"]}},
                     input="{{ title }}: {{ description }}")
    rows = read_source(task, "test")
    assert task.render_input(rows[0]) == "A & B: It's up down"
    assert [task.label_of(r) for r in rows] == ["1", "0"]


def test_csv_wrong_column_count(tmp_path: Path) -> None:
    write(tmp_path / "d.csv", "text,label\na,1\nb\nc,0\n")
    task = make_task(tmp_path, {"train": "d.csv"})
    with pytest.raises(DataError, match="expected 2 columns") as info:
        read_source(task, "train")
    assert info.value.line == 3


def test_label_text_format(tmp_path: Path) -> None:
    write(tmp_path / "sst.train", "1 a fine film .\n0 dull\n\n")
    task = make_task(tmp_path, {"train": "sst.train", "format": "label_text"})
    rows = read_source(task, "train")
    assert texts(rows) == ["a fine film .", "dull"] and [label(r) for r in rows] == ["1", "0"]
    write(tmp_path / "bad.train", "1 ok\nnospace\n")
    with pytest.raises(DataError, match="<label> <text>") as info:
        read_source(make_task(tmp_path, {"train": "bad.train", "format": "label_text"}), "train")
    assert info.value.line == 2


def test_gzip_is_transparent(tmp_path: Path) -> None:
    write(tmp_path / "d.jsonl.gz", gzip.compress(jsonl([{"text": "zipped", "label": 1}]).encode()))
    assert texts(read_source(make_task(tmp_path, {"train": "d.jsonl.gz"}), "train")) == ["zipped"]


def test_parallel_text_files(tmp_path: Path) -> None:
    write(tmp_path / "t.en.gz", gzip.compress(b"a dog\na cat\n"))
    write(tmp_path / "t.de.gz", gzip.compress(b"ein Hund\neine Katze\n"))
    write(tmp_path / "short.de", "nur eine\n")
    task = Task(name="mt", type="generation", input="{{ en }}", target="{{ de }}", metric="chrf",
                source=tmp_path / "task.yaml",
                data={"train": {"parallel": {"en": "t.en.gz", "de": "t.de.gz"}},
                      "test": {"parallel": {"en": "t.en.gz", "de": "short.de"}}})
    rows = read_source(task, "train")
    assert [(task.render_input(r), task.target_of(r)) for r in rows] == [("a dog", "ein Hund"),
                                                                          ("a cat", "eine Katze")]
    with pytest.raises(DataError, match="different line counts"):
        read_source(task, "test")


def test_encoding_option_and_decode_error(tmp_path: Path) -> None:
    write(tmp_path / "l1.csv", "text,label\nplain,0\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"))
    rows = read_source(make_task(tmp_path, {"train": {"path": "l1.csv", "encoding": "latin-1"}}), "train")
    assert texts(rows) == ["plain", "café crème"]
    with pytest.raises(DataError) as info:
        read_source(make_task(tmp_path, {"train": "l1.csv"}), "train")
    message = info.value.one_line()
    assert info.value.line == 3 and "encoding: cp1252" in message and "0xe9" in message  # the detected one


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_source(make_task(tmp_path, {"train": "nope.jsonl"}), "train")


def test_clean_text_repairs_agnews_escapes() -> None:
    steps = ["html", "backslashes", "whitespace"]
    assert clean_text("It #39;s  quot;big quot; news", steps) == "It's \"big\" news"
    assert clean_text("costs \\$400 in\\the US &amp;  #36;5", steps) == "costs $400 in the US & $5"
    assert clean_text("not; a entity; here", ["html"]) == "not; a entity; here"


def test_hf_local_dataset_and_json_builder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]}),
                               "test": datasets.Dataset.from_dict({"text": ["z"], "label": [1]})})
    ds.save_to_disk(str(tmp_path / "saved"))
    write(tmp_path / "rows.jsonl", jsonl([{"text": "j", "label": 1, "id": "r1"}]))
    task = make_task(tmp_path, {"train": {"hf": "saved"}, "test": {"hf": "saved", "split": "test"},
                                "dev": {"hf": "json", "data_files": "rows.jsonl"}})
    train = read_source(task, "train")
    assert texts(train) == ["x", "y"] and [task.label_of(e) for e in train] == ["0", "1"]
    assert texts(read_source(task, "test")) == ["z"]
    dev = read_source(task, "dev")
    assert texts(dev) == ["j"] and dev[0].id == "r1"
    with pytest.raises(DataError, match="no split"):
        read_source(make_task(tmp_path, {"train": {"hf": "saved", "split": "validation"}}), "train")


# ------------------------------------------------------------------------------------------------
# carving and subsets
# ------------------------------------------------------------------------------------------------

def test_dev_carved_stratified_and_seeded(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": int(i % 10 == 0)} for i in range(400)]  # 10% positives
    write(tmp_path / "train.jsonl", jsonl(rows))
    task = make_task(tmp_path, {"train": "train.jsonl"})
    splits = load_splits(task)
    assert len(splits.dev) == 40 and len(splits.train) == 360  # default: 10%
    assert Counter(task.label_of(e) for e in splits.dev) == {"0": 36, "1": 4}
    assert not set(texts(splits.dev)) & set(texts(splits.train))
    assert texts(load_splits(task).dev) == texts(splits.dev)
    assert texts(load_splits(task, seed=1).dev) != texts(splits.dev)
    assert texts(load_split(task, "dev")) == texts(splits.dev)


def test_test_carved_with_fixed_seed(tmp_path: Path) -> None:
    write(tmp_path / "all.jsonl", jsonl([{"text": f"t{i}", "label": i % 2} for i in range(100)]))
    task = make_task(tmp_path, {"train": "all.jsonl", "test_size": 0.2, "dev_size": 10})
    a, b = load_splits(task, seed=0), load_splits(task, seed=5)
    assert (len(a.train), len(a.dev), len(a.test)) == (70, 10, 20)
    assert texts(a.test) == texts(b.test)  # the test set never depends on the run seed
    assert len(set(texts(a.train)) | set(texts(a.dev)) | set(texts(a.test))) == 100
    with pytest.raises(ConfigError, match="leaves no training"):
        load_splits(make_task(tmp_path, {"train": "all.jsonl", "test_size": 100}))


def test_nested_subsets_are_nested_stratified_and_seeded() -> None:
    pool = labelled({"a": 300, "b": 100, "c": 50})
    subsets = nested_subsets(pool, [16, 64, 256, "all"], seed=3, label_of=label)
    assert subsets[16] == subsets[64][:16] and subsets[64] == subsets[256][:64]
    assert sorted(e.id for e in subsets["all"]) == sorted(e.id for e in pool)
    for n in (16, 64, 256):
        counts = Counter(label(e) for e in subsets[n])
        for c, size in {"a": 300, "b": 100, "c": 50}.items():
            assert abs(counts[c] - n * size / 450) <= 1
    again = nested_subsets(pool, [64], seed=3, label_of=label)
    assert again[64] == subsets[64]
    assert nested_subsets(pool, [64], seed=4, label_of=label)[64] != subsets[64]
    assert {label(e) for e in nested_subsets(labelled({"a": 97, "b": 2, "c": 1}), [3], seed=0,
                                             label_of=label)[3]} == {"a", "b", "c"}


def test_nested_subsets_too_large_suggests_all() -> None:
    with pytest.raises(DataError, match="only 10 available") as info:
        nested_subsets(labelled({"a": 5, "b": 5}), [16], seed=0, label_of=label)
    assert "'all'" in info.value.one_line()
    with pytest.raises(ConfigError):
        nested_subsets(labelled({"a": 5}), [-1], seed=0)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), seed=st.integers(0, 10_000),
       data=st.data())
def test_stratified_order_property(sizes: list[int], seed: int, data) -> None:
    counts = {f"c{i}": n for i, n in enumerate(sizes)}
    pool = labelled(counts)
    random.Random(seed).shuffle(pool)
    total = len(pool)
    order = stratified_order(pool, seed=seed, label_of=label)
    assert sorted(e.id for e in order) == sorted(e.id for e in pool)  # a permutation
    n = data.draw(st.integers(0, total))
    sub = nested_subsets(pool, [n, total], seed=seed, label_of=label)
    assert sub[n] == sub[total][:n]
    got = Counter(label(e) for e in sub[n])
    if n >= len(counts):
        assert set(got) == set(counts)  # every class appears
    if all(n * size / total >= 1 for size in counts.values()):
        assert all(abs(got[c] - n * size / total) <= 1 for c, size in counts.items())


# ------------------------------------------------------------------------------------------------
# robustness: malformed input only ever raises DataError
# ------------------------------------------------------------------------------------------------

line_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(lambda s: s.replace("\n", " "))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line_text | st.just('{"text": "ok", "label": 1}'), min_size=1, max_size=8),
       fmt=st.sampled_from(["jsonl", "csv", "tsv", "label_text"]))
def test_random_lines_raise_only_data_errors(tmp_path: Path, lines: list[str], fmt: str) -> None:
    path = write(tmp_path / "rows.txt", "\n".join(lines) + "\n")
    spec = {"path": path.name, "format": fmt}
    if fmt in ("csv", "tsv"):
        spec["columns"] = ["text", "label"]
    task = make_task(tmp_path, {"train": spec})
    try:
        rows = read_source(task, "train")
    except DataError as err:
        assert err.file == str(path) and err.line is not None
    else:
        assert all(isinstance(r.fields, dict) for r in rows)
    collected: list[DataError] = []
    read_source(task, "train", errors=collected)  # collecting never raises for row problems


def test_sst2_rows(shared_data: Path, tasks_dir: Path) -> None:
    splits = load_splits(load_task(tasks_dir / "sst2.yaml"))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (6920, 872, 1821)
