"""Experiment configs: parsing, validation errors (file:line + did-you-mean), grid expansion and cell keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from adaptlab.errors import ConfigError, DataError
from adaptlab.experiment import ExperimentConfig, builtin_experiment, expand_cells, load_experiment
from adaptlab.results import Scenario

REPO = Path(__file__).resolve().parents[1]

BASE = """\
name: t
task: builtin:demo
model: tiny-random-llama
train_sizes: [16, 64, all]
seeds: [0, 1, 2]
limit: 20
strategies:
  - zero_shot
  - name: few_shot
    options: {k: [2, 4], selection: [random, balanced]}
  - name: few_shot
    label: knn
    options: {k: 4, selection: knn}
    train_sizes: [2, 16]
  - name: lora
    train_sizes: [16, 32]
    seeds: [0]
    options: {rank: [4, 8], max_steps: 3}
  - name: embedding_probe
scenario:
  queries_per_month: 5000
  price_per_hour: 0.5
"""


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_experiment(_write(tmp_path, text))
    return info.value


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_grid_expansion_counts_and_overrides(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, BASE))
    assert cfg.scenario == Scenario(queries_per_month=5000, price_per_hour=0.5)
    cells = expand_cells(cfg, 100)
    by_variant = Counter(c.variant for c in cells)
    # zero-shot: no seed to vary, one cell
    assert by_variant["zero_shot"] == 1
    # 2 k x 2 selections, each at n_train = k, 3 seeds
    for k in (2, 4):
        for sel in ("random", "balanced"):
            group = [c for c in cells if c.variant == f"few_shot k={k} {sel}"]
            assert len(group) == 3 and {c.n_train for c in group} == {k} and {c.seed for c in group} == {0, 1, 2}
    # kNN: one cell per pool size >= k (the pool of 2 < k=4 is skipped), 3 seeds; label + no grid options
    knn = [c for c in cells if c.variant == "knn"]
    assert sorted({c.n_train for c in knn}) == [16] and len(knn) == 3
    # LoRA: its own sizes and seeds; the rank grid gives two variants; epochs resolved into the options
    lora = [c for c in cells if c.strategy == "lora"]
    assert len(lora) == 4 and {c.seed for c in lora} == {0}
    assert {(c.options["rank"], c.n_train) for c in lora} == {(4, 16), (4, 32), (8, 16), (8, 32)}
    assert all(c.options["epochs"] == 3 for c in lora)
    # embedding probe: experiment sizes with `all` resolved to the 100 training examples
    probe = [c for c in cells if c.strategy == "embedding_probe"]
    assert sorted({c.n_train for c in probe}) == [16, 64, 100] and len(probe) == 9
    assert len(cells) == 1 + 12 + 3 + 4 + 9
    assert len({c.key for c in cells}) == len(cells)


def test_all_equal_to_a_listed_size_is_one_cell(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, BASE))
    probe = [c for c in expand_cells(cfg, 64) if c.strategy == "embedding_probe"]
    assert sorted(c.n_train for c in probe) == [16, 16, 16, 64, 64, 64]


def test_sizes_beyond_the_training_set_fail_up_front(tmp_path: Path) -> None:
    cfg = load_experiment(_write(tmp_path, BASE))
    with pytest.raises(DataError) as info:
        expand_cells(cfg, 40)
    assert "64 exceeds the 40 training examples" in info.value.one_line()
    assert f":{_line(BASE, 'train_sizes: [16, 64, all]')}" in info.value.one_line()


def _keys(cfg: ExperimentConfig) -> list[str]:
    return [c.key for c in expand_cells(cfg, 100)]


def test_cell_keys_are_stable_across_loads_and_processes(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    keys = _keys(load_experiment(path))
    assert keys == _keys(load_experiment(path))
    # a fresh interpreter with another hash seed computes the same keys
    code = ("import json, sys; from adaptlab.experiment import load_experiment, expand_cells; "
            "print(json.dumps([c.key for c in expand_cells(load_experiment(sys.argv[1]), 100)]))")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO / "src"))
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                         check=True)
    assert json.loads(out.stdout) == keys
    # key order of options in the YAML does not matter
    swapped = BASE.replace("{k: [2, 4], selection: [random, balanced]}", "{selection: [random, balanced], k: [2, 4]}")
    assert set(_keys(load_experiment(_write(tmp_path, swapped, "b.yaml")))) == set(keys)


@pytest.mark.parametrize("old,new", [
    ("model: tiny-random-llama", "model: smollm2-135m-instruct"),
    ("limit: 20", "limit: 21"),
    ("limit: 20", "limit: 20\nsplit_seed: 1"),
    ("limit: 20", "limit: 20\nsplit: dev"),
    ("task: builtin:demo", "task: other/task.yaml"),
])
def test_every_key_changes_when_a_shared_field_changes(tmp_path: Path, old: str, new: str) -> None:
    if "other/task.yaml" in new:  # a task of another name
        other = tmp_path / "other"
        other.mkdir()
        demo = REPO / "src" / "adaptlab" / "demo"
        text = (demo / "task.yaml").read_text().replace("name: demo-intents", "name: other-intents")
        text = text.replace("train: train.jsonl", f"train: {demo / 'train.jsonl'}")
        (other / "task.yaml").write_text(text.replace("test: test.jsonl", f"test: {demo / 'test.jsonl'}"))
    a = _keys(load_experiment(_write(tmp_path, BASE, "a.yaml")))
    b = _keys(load_experiment(_write(tmp_path, BASE.replace(old, new), "b.yaml")))
    assert len(a) == len(b) and not set(a) & set(b)


def test_keys_change_with_the_cell_fields(tmp_path: Path) -> None:
    base = {c.describe(): c.key for c in expand_cells(load_experiment(_write(tmp_path, BASE, "a.yaml")), 100)}
    # epochs changes fine-tuning cells only (prompt cells and the probe do not train for epochs)
    epochs = {c.describe(): c for c in expand_cells(load_experiment(
        _write(tmp_path, BASE.replace("limit: 20", "limit: 20\nepochs: 5"), "b.yaml")), 100)}
    for name, cell in epochs.items():
        assert (cell.key != base[name]) == (cell.strategy == "lora"), name
    # one option value changes exactly that variant's cells
    rank = {c.describe(): c.key for c in expand_cells(load_experiment(
        _write(tmp_path, BASE.replace("max_steps: 3", "max_steps: 4"), "c.yaml")), 100)}
    changed = {name for name in base if rank.get(name) != base[name]}
    assert changed == {name for name in base if name.startswith("lora")}
    # seed and n_train are part of the key
    keys = list(base.values())
    assert len(set(keys)) == len(keys)


def test_unknown_top_level_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    text = BASE.replace("seeds: [0, 1, 2]", "seed: [0, 1, 2]")
    err = _error(tmp_path, text)
    assert err.line == _line(text, "seed: [0, 1, 2]") and err.file.endswith("exp.yaml")
    assert "unknown key 'seed'" in err.one_line() and "did you mean 'seeds'?" in err.one_line()


def test_unknown_key_in_a_strategy_entry_and_in_the_scenario(tmp_path: Path) -> None:
    text = BASE.replace("    label: knn", "    lable: knn")
    err = _error(tmp_path, text)
    assert err.line == _line(text, "lable: knn") and "did you mean 'label'?" in err.one_line()
    text = BASE.replace("  price_per_hour: 0.5", "  price_per_hr: 0.5")
    err = _error(tmp_path, text)
    assert err.line == _line(text, "price_per_hr") and "did you mean 'price_per_hour'?" in err.one_line()


def test_unknown_strategy_option_fails_before_running_with_a_suggestion(tmp_path: Path) -> None:
    text = BASE.replace("{k: 4, selection: knn}", "{k: 4, selectoin: knn}")
    err = _error(tmp_path, text)
    assert err.line == _line(text, "selectoin") and err.field == "strategies.2.options.selectoin"
    assert "did you mean 'selection'?" in err.one_line()
    text = BASE.replace("{rank: [4, 8], max_steps: 3}", "{rnk: [4, 8], max_steps: 3}")
    err = _error(tmp_path, text)
    assert "did you mean 'rank'?" in err.one_line() and err.line == _line(text, "rnk")
    assert "unknown lora option 'rnk'" in err.one_line() and "did you mean 'rank'?" in err.one_line()
    assert err.line == _line(text, "rnk")


def test_invalid_option_values_and_strategy_names(tmp_path: Path) -> None:
    err = _error(tmp_path, BASE.replace("selection: [random, balanced]", "selection: [random, best]"))
    assert err.field == "strategies.1.options.selection" and "'balanced'" in err.message
    err = _error(tmp_path, BASE.replace("  - name: embedding_probe", "  - name: embeding_probe"))
    assert "unknown strategy 'embeding_probe'" in err.one_line() and "'embedding_probe'" in err.one_line()
    err = _error(tmp_path, BASE.replace("max_steps: 3}", "max_steps: 3, seed: 1}"))
    assert "seeds" in err.one_line()
    err = _error(tmp_path, BASE.replace("  - zero_shot\n", "  - name: zero_shot\n    train_sizes: [16]\n"))
    assert "train_sizes does not apply" in err.one_line()
    err = _error(tmp_path, BASE.replace("  queries_per_month: 5000", "  queries_per_month: lots"))
    assert err.field == "scenario.queries_per_month"


def test_list_typed_options_grid_only_on_lists_of_lists(tmp_path: Path) -> None:
    one = BASE.replace("  - name: embedding_probe\n", "  - name: calibrate\n    options: {content_free: [N/A, '']}\n")
    two = BASE.replace("  - name: embedding_probe\n",
                       "  - name: calibrate\n    options: {content_free: [[N/A], ['']]}\n")
    cal1 = [c for c in expand_cells(load_experiment(_write(tmp_path, one, "a.yaml")), 100) if c.strategy == "calibrate"]
    cal2 = [c for c in expand_cells(load_experiment(_write(tmp_path, two, "b.yaml")), 100) if c.strategy == "calibrate"]
    assert [c.options["content_free"] for c in cal1] == [["N/A", ""]]
    assert sorted(c.options["content_free"] for c in cal2) == [[""], ["N/A"]]


def test_python_object_equals_yaml(tmp_path: Path) -> None:
    cfg = ExperimentConfig(name="t", task="builtin:demo", model="tiny-random-llama", seeds=[0],
                           strategies=["zero_shot", {"name": "few_shot", "options": {"k": [2, 4]}}],
                           scenario={"queries_per_month": 10})
    assert [c.variant for c in expand_cells(cfg, 50)] == ["zero_shot", "few_shot k=2", "few_shot k=4"]
    with pytest.raises(ConfigError, match="did you mean 'strategies'"):
        ExperimentConfig(name="t", task="builtin:demo", strategis=["zero_shot"])


SHIPPED = sorted((REPO / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_experiments_parse_and_expand(path: Path, shared_data: Path) -> None:
    from adaptlab.experiment.runner import prepare

    cfg = load_experiment(path)
    inputs, cells = prepare(cfg)
    assert cells and len({c.key for c in cells}) == len(cells)
    assert len(inputs.test) == (cfg.limit or len(inputs.test))
    strategies = {c.strategy for c in cells}
    if path.stem in ("large-vs-small", "multi30k-en-fr"):  # two models: prompt the large, tune the small
        roles = {c.strategy: c.role for c in cells}
        assert {"lora", "distill"} <= strategies and roles["lora"] == roles["distill"] == "small"
        assert roles["few_shot"] == "large" or any(c.role == "large" for c in cells if c.strategy == "few_shot")
        assert all(c.role == "small" for c in cells if c.family == "finetune")
        if path.stem == "large-vs-small":
            assert "cascade" in strategies and len({c.options.get("pool") for c in cells if c.strategy == "distill"}) >= 2
    elif path.stem != "demo":  # the fair comparison of issue 14: both arms on the same labels, several formats
        assert {"zero_shot", "few_shot", "many_shot", "lora", "setfit", "embedding_probe"} <= strategies
        sizes = set(cfg.train_sizes)  # trimmed to fit a session (docs/benchmarks.md), the same for both arms
        assert len(sizes) >= 2
        for strategy in ("lora", "many_shot", "setfit", "embedding_probe"):
            assert {c.n_train for c in cells if c.strategy == strategy} == sizes, strategy
        assert {c.n_train for c in cells if c.options.get("selection") == "knn"} == sizes  # kNN at every size
        lora = [c for c in cells if c.strategy == "lora"]
        assert all(c.options.get("select_on_dev") is False for c in lora if c.n_train == max(sizes))
        if path.stem == "sst2":  # both ways of training, with and without dev labels
            assert {c.options.get("select_on_dev") for c in lora} == {True, False}
        assert {c.options.get("format") for c in cells if c.strategy == "zero_shot"} == {"chat", "plain"}
        assert {c.seed for c in cells} == {0, 1, 2} and cfg.limit == 150
        assert cfg.scenario.prefix_cache  # a serving engine keeps the many-shot prefix


def test_demo_experiment_is_the_packaged_one_and_expands_as_designed() -> None:
    from adaptlab.experiment.runner import prepare

    packaged = builtin_experiment("demo")
    shipped = load_experiment(REPO / "experiments" / "demo.yaml")
    assert (REPO / "experiments" / "demo.yaml").read_text() == (
        REPO / "src" / "adaptlab" / "demo" / "experiment.yaml").read_text()
    assert [c.key for c in expand_cells(packaged, 525)] == [c.key for c in expand_cells(shipped, 525)]
    inputs, cells = prepare(packaged)
    assert (len(inputs.train), len(inputs.test)) == (525, 196)
    assert [(c.strategy, c.n_train, c.seed) for c in cells] == [
        ("zero_shot", 0, 0), ("few_shot", 8, 0), ("few_shot", 8, 1), ("calibrate", 8, 0), ("calibrate", 8, 1),
        ("embedding_probe", 32, 0), ("embedding_probe", 128, 0), ("embedding_probe", 525, 0), ("lora", 128, 0)]
    assert packaged.model == "smollm2-135m-instruct" and packaged.task == "builtin:demo"


def test_pyproject_ships_the_demo_experiment() -> None:
    """The package data setting covers the demo's files (what a wheel holds), and they load from the package."""
    import fnmatch
    import tomllib
    from importlib.resources import files

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["adaptlab"]
    demo = files("adaptlab") / "demo"
    shipped = [p.name for p in demo.iterdir() if p.name.endswith((".yaml", ".jsonl"))]
    assert "experiment.yaml" in shipped and "task.yaml" in shipped
    for name in shipped:
        assert any(fnmatch.fnmatch(f"demo/{name}", pattern) for pattern in data), name
    assert builtin_experiment("demo").name == "demo"


def test_yaml_snippet_from_the_docs_parses(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        name: mini
        task: builtin:demo
        strategies: [zero_shot, {name: few_shot, options: {k: 4}}]
        train_sizes: [16]
        seeds: [0]
    """)
    cfg = load_experiment(_write(tmp_path, text))
    assert [c.n_train for c in expand_cells(cfg, 100)] == [0, 4]


def test_run_with_impossible_sizes_fails_before_creating_the_run_folder(tmp_path: Path) -> None:
    from adaptlab.experiment import run_experiment

    cfg = load_experiment(_write(tmp_path, BASE.replace("train_sizes: [16, 64, all]", "train_sizes: [16, 4096]")))
    with pytest.raises(DataError, match="4096 exceeds the 525 training examples"):
        run_experiment(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_backend_and_dtype_change_the_cell_keys(tmp_path: Path) -> None:
    """A resume on another backend, server or dtype must not reuse cells computed another way."""
    cfg = load_experiment(_write(tmp_path, BASE))
    hf = set(_keys(cfg))
    api = set(_keys(cfg.model_copy(update={"backend": "api", "base_url": "http://127.0.0.1:1/v1"})))
    other = set(_keys(cfg.model_copy(update={"backend": "api", "base_url": "http://127.0.0.1:2/v1"})))
    bf16 = set(_keys(cfg.model_copy(update={"dtype": "bfloat16"})))
    assert len({frozenset(hf), frozenset(api), frozenset(other), frozenset(bf16)}) == 4
    assert not (hf & api) and not (api & other) and not (hf & bf16)
