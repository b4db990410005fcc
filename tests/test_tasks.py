"""Task configs: YAML <-> Task, unknown keys with suggestions and lines, templates, labels, paths."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from adaptlab.data import DataSpec, Example, Task, builtin_task, load_splits, load_task
from adaptlab.data.templates import compile_template, template_fields
from adaptlab.errors import ConfigError, DataError

SHIPPED = ["sst2", "agnews", "rte", "cb", "boolq", "multi30k-en-de", "multi30k-en-fr"]

BASE_YAML = """\
name: toy
type: classification
instruction: Classify the sentiment.
data:
  train: train.jsonl
  test: test.jsonl
input: "Review: {{ text }}"
label_field: label
labels: {0: negative, 1: positive}
metric: accuracy
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def ex(**fields) -> Example:
    return Example(id="x", fields=fields, source="mem", line=1)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_task_yamls_parse(tasks_dir: Path, name: str) -> None:
    task = load_task(tasks_dir / f"{name}.yaml")
    assert task.name == name
    assert task.source == (tasks_dir / f"{name}.yaml").resolve()
    assert task.instruction.strip()
    if task.type == "classification":
        assert len(task.label_keys) == len(task.verbalizers) >= 2
    else:
        assert task.target and not task.labels


def test_task_round_trips_through_model_dump(tasks_dir: Path) -> None:
    task = load_task(tasks_dir / "agnews.yaml")
    again = Task(**task.model_dump(), source=task.source)
    assert again == task
    assert again.data.source("test") == task.data.source("test")
    assert again.data.format_of("train") == "tsv"


def test_yaml_maps_onto_task(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, "task.yaml", BASE_YAML))
    assert task.labels == {"0": "negative", "1": "positive"}  # keys normalised to str
    assert task.label_keys == ["0", "1"] and task.verbalizers == ["negative", "positive"]
    assert task.render_input(ex(text="great film", label=1)) == "Review: great film"
    assert task.label_of(ex(text="t", label=1)) == "1"
    assert task.label_of(ex(text="t", label=1.0)) == "1"
    assert task.target_of(ex(text="t", label=0)) == "negative"
    assert template_fields(task.input) == {"text"}


def test_unknown_top_level_key_names_closest_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "task.yaml", BASE_YAML.replace("label_field:", "lable_field:"))
    with pytest.raises(ConfigError) as info:
        load_task(path)
    err = info.value
    assert "unknown key 'lable_field'" in err.one_line()
    assert "did you mean 'label_field'?" in err.one_line()
    assert err.line == 8 and err.file == str(path)


def test_unknown_nested_key_in_split_source(tmp_path: Path) -> None:
    text = BASE_YAML.replace("  test: test.jsonl", "  test:\n    path: test.jsonl\n    encodng: latin-1")
    with pytest.raises(ConfigError) as info:
        load_task(write(tmp_path, "task.yaml", text))
    assert "did you mean 'encoding'?" in str(info.value)
    assert info.value.line == 8


def test_invalid_values_are_one_line_config_errors(tmp_path: Path) -> None:
    cases = {
        "type: classification": ("type: clasification", "type", 2),
        "metric: accuracy": ("metric: acuracy", "did you mean 'accuracy'", 10),
        'input: "Review: {{ text }}"': ('input: "Review: {{ text }"', "invalid Jinja2 template", 7),
        "labels: {0: negative, 1: positive}": ("labels: {0: negative}", "at least two labels", 9),
    }
    for old, (new, expected, line) in cases.items():
        with pytest.raises(ConfigError) as info:
            load_task(write(tmp_path, "task.yaml", BASE_YAML.replace(old, new)))
        message = info.value.one_line()
        assert expected in message and "\n" not in message and "pydantic" not in message
        assert info.value.line == line, message


def test_yaml_syntax_error_and_duplicate_key_have_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_task(write(tmp_path, "bad.yaml", BASE_YAML + "labels: [unclosed\n"))
    assert info.value.line is not None and "invalid YAML" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_task(write(tmp_path, "dup.yaml", BASE_YAML + "metric: macro_f1\n"))
    assert "duplicate key 'metric'" in str(info.value) and info.value.line == 11


def test_yes_no_verbalizers_stay_strings(tmp_path: Path) -> None:
    text = BASE_YAML.replace("labels: {0: negative, 1: positive}", "labels: {true: yes, false: no}")
    task = load_task(write(tmp_path, "task.yaml", text))
    assert task.labels == {"true": "yes", "false": "no"}
    assert task.label_of(ex(label=True)) == "true"


def test_relative_paths_resolve_against_yaml_folder(tmp_path: Path, monkeypatch) -> None:
    write_rows(tmp_path / "data" / "train.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(20)])
    write_rows(tmp_path / "data" / "test.jsonl", [{"text": "x", "label": 0}])
    text = BASE_YAML.replace("train.jsonl", "../data/train.jsonl").replace("test.jsonl", "../data/test.jsonl")
    path = write(tmp_path, "tasks/task.yaml", text)
    monkeypatch.chdir(tmp_path / "data")  # paths must not depend on the working directory
    splits = load_splits(load_task(path))
    assert len(splits.train) + len(splits.dev) == 20 and len(splits.test) == 1
    assert Path(splits.test[0].source) == tmp_path / "data" / "test.jsonl"


def test_python_construction_raises_config_error() -> None:
    kwargs = dict(name="t", type="classification", data={"train": "a.jsonl"}, input="{{ text }}",
                  labels={0: "neg", 1: "pos"}, metric="accuracy")
    task = Task(**kwargs)
    assert task.label_field == "label" and isinstance(task.data, DataSpec)
    with pytest.raises(ConfigError, match="did you mean 'label_field'"):
        Task(**kwargs, lable_field="label")
    with pytest.raises(ConfigError, match="cannot infer the format"):
        Task(**{**kwargs, "data": {"train": "a.weird"}})
    with pytest.raises(ConfigError, match="exactly one of path, parallel or hf"):
        Task(**{**kwargs, "data": {"train": {"path": "a.jsonl", "hf": "x"}}})
    with pytest.raises(ConfigError, match="dev_size only applies"):
        Task(**{**kwargs, "data": {"train": "a.jsonl", "dev": "b.jsonl", "dev_size": 10}})
    with pytest.raises(ConfigError, match="does not suit"):
        Task(**{**kwargs, "metric": "chrf"})
    with pytest.raises(ConfigError, match="did you mean 'html'"):
        Task(**{**kwargs, "data": {"train": "a.jsonl", "clean": "htm"}})


def test_generation_task_needs_target() -> None:
    kwargs = dict(name="mt", type="generation", data={"train": {"parallel": {"en": "a.en", "de": "a.de"}}},
                  input="{{ en }}", metric="chrf")
    with pytest.raises(ConfigError, match="needs a `target`"):
        Task(**kwargs)
    task = Task(**kwargs, target="{{ de }}")
    assert task.label_field is None and task.labels == {}
    assert task.target_of(ex(en="a dog", de="ein Hund")) == "ein Hund"
    assert task.template_fields() == {"en", "de"}
    with pytest.raises(ConfigError):
        task.label_of(ex(en="a", de="b"))


def test_missing_fields_render_empty_and_errors_name_the_row() -> None:
    task = Task(name="t", type="classification", data={"train": "a.jsonl"}, labels={0: "a", 1: "b"},
                input="{% if title %}{{ title }}: {% endif %}{{ text }}", metric="accuracy")
    assert task.render_input(ex(text="body")) == "body"
    assert task.render_input(ex(text="body", title="T")) == "T: body"
    with pytest.raises(DataError) as info:
        task.label_of(Example(id="r1", fields={"text": "x"}, source="f.jsonl", line=3))
    assert info.value.line == 3 and info.value.file == "f.jsonl"


def test_templates_are_cached_and_not_escaped() -> None:
    assert compile_template("{{ a }} & {{ b }}") is compile_template("{{ a }} & {{ b }}")
    assert compile_template("{{ a }}").render(a="<b> & 'q'") == "<b> & 'q'"


def test_builtin_demo_task() -> None:
    if not (resources.files("adaptlab") / "demo" / "task.yaml").is_file():
        pytest.skip("demo task not present")
    task = builtin_task()
    assert task.source is not None and task.source.name == "task.yaml"
    assert len(task.labels) >= 2
    with pytest.raises(ConfigError, match="built-in task"):
        builtin_task("nope")
