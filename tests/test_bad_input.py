"""Bad input: property tests over the loaders and configs, and named cases through the real CLI.

Every bad input ends in one line on stderr naming the file and the line or key, exit status 1, and no
traceback (unless ``--debug``). The named cases run the CLI's own entry point (`adaptlab.cli.main`):
a representative few as the installed `adaptlab` command in a subprocess, the rest in this process
(same code path, without ~1 s of interpreter start each). They all fail before any model is loaded.
See docs/reliability.md for the table of cases.
"""

from __future__ import annotations

import json
import logging
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptlab.config import parse_scalar
from adaptlab.data import Task, load_splits, load_task
from adaptlab.errors import AdaptlabError, ConfigError, DataError
from adaptlab.strategies import get_strategy, strategy_names

_BIN = Path(sys.executable).with_name("adaptlab")
ADAPTLAB = [str(_BIN)] if _BIN.is_file() else [sys.executable, "-m", "adaptlab"]
LABELS = "{a: alpha, b: beta}"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed `adaptlab` command in a subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*ADAPTLAB, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def cli(capsys, monkeypatch):
    """`adaptlab.cli.main()` in this process (the console script's own entry point, error handling
    included) with captured output; used for most named cases, a subprocess costs ~1 s each."""
    from adaptlab import cli as cli_module

    def invoke(*args: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", ["adaptlab", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli_module.main()
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, info.value.code, out.out, out.err)

    return invoke


def rows(n: int, **extra: object) -> str:
    return "".join(json.dumps({"text": f"text number {i}", "label": "ab"[i % 2], **extra}) + "\n"
                   for i in range(n))


def write_task(folder: Path, train: str = "train.jsonl", test: str = "test.jsonl", *, extra: str = "",
               source_extra: str = "") -> Path:
    """A classification task YAML in ``folder`` (labels a/b); data files are written by the caller."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.yaml"
    path.write_text(
        "name: t\ntype: classification\ninstruction: Classify.\n"
        f"data:\n  train: {train}\n  test: {test}\n{source_extra}"
        f"input: '{{{{ text }}}}'\nlabels: {LABELS}\nmetric: accuracy\n{extra}", encoding="utf-8")
    return path


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1, exactly one stderr line starting 'error:', containing every fragment, no traceback."""
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------------
# property tests: loaders and configs raise AdaptlabError or succeed, never anything else
# ------------------------------------------------------------------------------------------------

GOOD_LINES = {"jsonl": json.dumps({"text": "ok", "label": "a"}), "csv": "ok,a", "tsv": "ok\ta"}
garbage_line = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b'{"text": "x"', b'{"label": "zz", "text": 1}', b"[1, 2]", b"null", b'"str"',
                     b'{"text": "a", "label": null}', b'{"text": {"n": 1}, "label": "a"}', b'"a","b","c"',
                     b'"unterminated,a', b"\xef\xbb\xbf" + b'{"text": "bom", "label": "b"}', b"\x00\x00",
                     b'{"text": "' + b"9" * 5000 + b'", "label": "a"}', b"[" * 5000, b"1e999999",
                     b'{"id": 1, "text": "dup", "label": "a"}']),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(garbage_line | st.just(b"GOOD"), min_size=0, max_size=8),
       fmt=st.sampled_from(["jsonl", "csv", "tsv"]), encoding=st.sampled_from([None, "latin-1", "utf-16"]),
       crlf=st.booleans())
def test_garbage_in_a_task_file_loads_or_raises_adaptlab_error(tmp_path: Path, lines: list[bytes], fmt: str,
                                                               encoding: str | None, crlf: bool) -> None:
    good = GOOD_LINES[fmt].encode()
    raw = (b"\r\n" if crlf else b"\n").join(good if ln == b"GOOD" else ln for ln in lines)
    data = tmp_path / f"rows.{fmt}"
    data.write_bytes(raw)
    spec = f"    path: rows.{fmt}\n" + (f"    encoding: {encoding}\n" if encoding else "")
    if fmt != "jsonl":
        spec += "    columns: [text, label]\n"
    task_file = write_task(tmp_path, train=f"\n{spec}", test=f"\n{spec}", extra="")
    try:
        task = load_task(task_file)
        splits = load_splits(task)
    except AdaptlabError as err:  # the error locates the problem
        assert err.file is not None and str(tmp_path) in err.file
        assert "\n" not in err.one_line()
        return
    for ex in [*splits.train, *splits.dev, *splits.test]:
        assert isinstance(ex.fields, dict) and ex.source == str(data) and ex.line >= 1


_KEYS = ["name", "type", "instruction", "data", "input", "labels", "label_field", "target", "metric"]
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12), st.sampled_from(["{{ text }}", "{{ x ", "{% if %}"]))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(string.ascii_letters, max_size=6), inner, max_size=3), max_leaves=6)
_BASE = {"name": "t", "type": "classification", "instruction": "Classify.",
         "data": {"train": "train.jsonl", "test": "test.jsonl"}, "input": "{{ text }}",
         "labels": {"a": "alpha", "b": "beta"}, "metric": "accuracy"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(_KEYS) | st.text(string.ascii_lowercase + "_", min_size=1,
                                                                  max_size=10), _value, max_size=4),
       drop=st.lists(st.sampled_from(_KEYS), max_size=3))
def test_random_task_yaml_gives_a_task_or_a_config_error(tmp_path: Path, changes: dict, drop: list[str]) -> None:
    doc = {k: v for k, v in {**_BASE, **changes}.items() if k not in drop}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    try:
        task = load_task(path)
    except ConfigError as err:
        assert err.file == str(path)
        line = err.one_line()
        assert "\n" not in line and "pydantic" not in line and "validation error" not in line
        if "unknown key" in line:  # names the key and its line in the file
            assert err.field is not None and err.line is not None
        return
    assert isinstance(task, Task) and task.source == path.resolve()
    assert set(doc) <= set(_KEYS)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_random_yaml_text_gives_a_task_or_a_config_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("yaml") / "task.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(ConfigError) as info:  # random text is never a complete task
        load_task(path)
    assert info.value.file == str(path)


_option_value = st.one_of(st.none(), st.booleans(), st.integers(-3, 64), st.floats(allow_nan=True),
                          st.text(string.printable, max_size=8), st.lists(st.text(max_size=4), max_size=2),
                          st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                               max_size=1))


def method_fields(method: str) -> list[str]:
    """Option names a fine-tuning method accepts (its own and, for gradient methods, the training fields)."""
    return list(get_strategy(method).config.model_fields)


FINETUNE_METHODS = strategy_names("finetune")


@settings(max_examples=100, deadline=None)
@given(method=st.sampled_from(FINETUNE_METHODS), data=st.data())
def test_random_finetune_options_give_configs_or_a_config_error(method: str, data) -> None:
    keys = st.sampled_from(method_fields(method)) | st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
    options = data.draw(st.dictionaries(keys, _option_value | st.text(max_size=6), max_size=4))
    # as given from Python (strict types), and as `--set key=value` text reads (YAML scalars)
    as_text = {k: parse_scalar(v) if isinstance(v, str) else v for k, v in options.items()}
    for opts in (options, as_text):
        try:
            cfg = get_strategy(method).parse(opts)
        except ConfigError as err:
            assert err.field is not None and "\n" not in err.one_line()
            continue
        assert cfg.strategy_name == method
        if hasattr(cfg, "train_args"):
            assert cfg.train_args(0, progress=False).batch_size >= 1


# ------------------------------------------------------------------------------------------------
# named cases through the real CLI
# ------------------------------------------------------------------------------------------------

def test_malformed_json_line(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    lines = rows(6).splitlines()
    lines[2] = '{"text": "broken", "label": '
    (tmp_path / "test.jsonl").write_text("\n".join(lines) + "\n")
    out = run_cli("prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "out"), "--model", "tiny-random-llama")
    assert_one_line_error(out, "test.jsonl:3", "invalid JSON")
    assert not (tmp_path / "out" / "adapted.json").exists()


def test_malformed_csv_line(cli, tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(8)))
    (tmp_path / "test.csv").write_text("text,label\nfine,a\n\"quoted, ok\",b\ntoo,many,cells\n")
    out = cli("prompt", str(write_task(tmp_path, "train.csv", "test.csv")), "--out", str(tmp_path / "o"))
    assert_one_line_error(out, "test.csv:4", "expected 2 columns")


def test_wrong_encoding_names_line_and_suggests_the_option(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    out = run_cli("finetune", str(write_task(tmp_path)), "--out", str(tmp_path / "o"), "--n-train", "4")
    assert_one_line_error(out, "test.jsonl:2", "0xe9", "`encoding: cp1252` (detected)")


def test_missing_label_field(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(4) + json.dumps({"text": "no label here"}) + "\n")
    out = cli("prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "o"))
    assert_one_line_error(out, "test.jsonl:5", "[label]", "no 'label' field")


def test_label_outside_the_verbalizer_set(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10) + json.dumps({"text": "odd", "label": "c"}) + "\n")
    (tmp_path / "test.jsonl").write_text(rows(4))
    task = write_task(tmp_path, extra="")
    task.write_text(task.read_text().replace("  test: test.jsonl\n", "  test: test.jsonl\n  dev_size: 0\n"))
    out = cli("finetune", str(task), "--out", str(tmp_path / "o"), "--n-train", "4")
    assert_one_line_error(out, "train.jsonl:11", "label 'c'", "not one of the task's labels")
    out = cli("prompt", str(task), "--out", str(tmp_path / "o"), "--strategy", "few_shot")
    assert_one_line_error(out, "train.jsonl:11", "label 'c'")


def test_empty_split(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text("\n\n")
    out = cli("prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "o"))
    assert_one_line_error(out, "test.jsonl", "[data.test]", "holds no rows")


def test_class_with_no_training_examples(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "a"}) + "\n"
                                                  for i in range(12)))
    (tmp_path / "test.jsonl").write_text(rows(4))
    out = cli("finetune", str(write_task(tmp_path)), "--out", str(tmp_path / "o"), "--n-train", "8")
    assert_one_line_error(out, "train.jsonl", "[labels]", "label 'b' has no training examples")


def test_duplicate_ids_in_the_evaluated_split(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(2) + json.dumps({"id": 7, "text": "x", "label": "a"}) + "\n"
                                         + json.dumps({"id": 7, "text": "y", "label": "b"}) + "\n")
    out = cli("prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "o"))
    assert_one_line_error(out, "test.jsonl:4", "[id]", "duplicate test example id '7'", "test.jsonl:3")
    out = cli("validate", str(write_task(tmp_path)), "--no-model")  # validate agrees: an error
    assert out.returncode == 1 and "duplicate example ids" in out.stdout + out.stderr


def test_n_train_larger_than_the_data(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(20))
    (tmp_path / "test.jsonl").write_text(rows(4))
    out = cli("finetune", str(write_task(tmp_path)), "--out", str(tmp_path / "o"), "--n-train", "500")
    assert_one_line_error(out, "train.jsonl", "[n_train]", "500", "18 training examples", "carved dev")


@pytest.mark.parametrize("args, fragments", [
    (["prompt", "--strategy", "few_sht"], ["[few_sht]", "did you mean 'few_shot'"]),
    (["prompt", "--strategy", "few_shot", "--option", "kk=4"], ["[kk]", "did you mean 'k'"]),
    (["finetune", "--method", "lroa"], ["[method]", "did you mean 'lora'"]),
    (["finetune", "--option", "rnak=4"], ["[rnak]", "did you mean 'rank'"]),
    (["finetune", "--option", "batch_size=[8]"], ["[batch_size]", "must be an integer"]),
])
def test_unknown_strategy_and_option_names_suggest_the_closest(cli, tmp_path: Path, args: list[str],
                                                               fragments: list[str]) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(4))
    out = cli(args[0], str(write_task(tmp_path)), "--out", str(tmp_path / "o"), *args[1:])
    assert_one_line_error(out, *fragments)


def test_unknown_task_key_names_file_line_and_closest(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(4))
    task = write_task(tmp_path, extra="metrc: accuracy\n")
    out = cli("finetune", str(task), "--out", str(tmp_path / "o"))
    assert_one_line_error(out, "task.yaml:10", "unknown key 'metrc'", "did you mean 'metric'")
    out = cli("prompt", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert_one_line_error(out, "nope.yaml", "file not found")


@pytest.mark.parametrize("model, fragments", [
    ("smollm3", ["[model]", "unknown model 'smollm3'", "did you mean 'smollm2-135m-instruct'"]),
    ("", ["[model]", "no model name given"]),
])
def test_missing_model_name(cli, tmp_path: Path, model: str, fragments: list[str]) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(4))
    out = cli("prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "o"), "--model", model,
                  "--strategy", "zero_shot")
    assert_one_line_error(out, *fragments)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text("not json\n")
    out = run_cli("--debug", "prompt", str(write_task(tmp_path)), "--out", str(tmp_path / "o"))
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "DataError" in out.stderr and "test.jsonl:1" in out.stderr


# ------------------------------------------------------------------------------------------------
# unwritable output folders (run as root, chmod does not stop writes: a file in the way instead)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["prompt", "finetune"])
def test_output_folder_that_cannot_be_written(tmp_path: Path, command: str) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(4))
    task = str(write_task(tmp_path))
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    out = run_cli(command, task, "--out", str(blocker))
    assert_one_line_error(out, str(blocker), "[--out]", "is a file")
    out = run_cli(command, task, "--out", str(blocker / "sub"))
    assert_one_line_error(out, str(blocker / "sub"), "cannot write the output folder", "a parent of it is a file")
    assert blocker.read_text() == "in the way"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(4))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        out = run_cli("prompt", str(write_task(tmp_path)), "--out", str(locked / "run"))
        assert_one_line_error(out, "cannot write the output folder", "Permission denied")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------------------------------
# in-process cases: extra fields, truncation warnings
# ------------------------------------------------------------------------------------------------

def test_extra_fields_in_rows_are_kept_and_harmless(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(rows(10, source="web", score=0.5))
    (tmp_path / "test.jsonl").write_text(rows(4, nested={"a": [1, 2]}))
    splits = load_splits(load_task(write_task(tmp_path)))
    assert splits.test[0].fields["nested"] == {"a": [1, 2]}
    assert {"source", "score"} <= set(splits.train[0].fields)


def test_long_texts_are_cut_with_a_warning_that_counts_them(tiny_loaded, caplog) -> None:
    from adaptlab.lm.base import LoglikelihoodRequest
    from adaptlab.lm.hf import HFLM
    from adaptlab.strategies.finetune.batching import Pair, encode_pairs

    long_text = "word " * 200
    lm = HFLM.from_loaded(tiny_loaded, max_length=64)
    caplog.set_level(logging.WARNING)
    reqs = [LoglikelihoodRequest(long_text, (" alpha", " beta")), LoglikelihoodRequest("short", (" alpha",)),
            LoglikelihoodRequest(long_text + "again", (" beta",))]
    results = lm.loglikelihood(reqs)
    assert len(results) == 3 and all(r.prompt_tokens <= 64 for r in results)
    assert "2 contexts were cut from the left to fit 64 tokens" in caplog.text

    caplog.clear()
    pairs = [Pair(long_text, " alpha"), Pair("short", " beta"), Pair(long_text, " beta"), Pair(long_text, " a")]
    encoded = encode_pairs(tiny_loaded.tokenizer, pairs, max_length=32)
    assert all(len(e) <= 32 for e in encoded) and len(encoded[1]) < 32
    assert "3 of 4 texts exceed max_length=32 tokens and were cut" in caplog.text


def test_data_errors_are_raised_before_the_model_is_built(tmp_path: Path) -> None:
    from adaptlab.experiment.single import SingleRun, run_single
    from adaptlab.strategies import ModelPool

    (tmp_path / "train.jsonl").write_text(rows(10))
    (tmp_path / "test.jsonl").write_text(rows(3) + json.dumps({"text": "x", "label": "zz"}) + "\n")
    built: list[str] = []

    class RecordingPool(ModelPool):  # notes every model (or embedder) the run asks for
        def lm(self, role="default"):
            built.append("lm")
            return super().lm(role)

        def trainable(self, role="default"):
            built.append("trainable")
            return super().trainable(role)

        def embedder(self, name):
            built.append("embedder")
            return super().embedder(name)

    with pytest.raises(DataError) as info:
        run_single(load_task(write_task(tmp_path)), "zero_shot", {}, RecordingPool.of("tiny-random-llama"),
                   SingleRun(out_dir=tmp_path / "o", progress=False))
    assert info.value.line == 4 and info.value.file == str(tmp_path / "test.jsonl")
    assert built == []  # the model was never built


# ------------------------------------------------------------------------------------------------
# out of GPU memory: halve the micro-batch, keep the optimizer step's examples, retry (bounded)
# ------------------------------------------------------------------------------------------------

def _fake_step(cap: int, group: list[int], seen: list[list[int]]):
    """A step over ``group`` in micro-batches; "CUDA out of memory" when a micro-batch exceeds ``cap``."""
    def step(micro: int) -> int:
        pieces = [group[i:i + micro] for i in range(0, len(group), micro)]
        if max(len(p) for p in pieces) > cap:
            raise RuntimeError(f"CUDA out of memory. Tried to allocate {micro} GiB")
        seen.append([len(p) for p in pieces])
        return sum(sum(p) for p in pieces)
    return step


def test_oom_policy_halves_the_micro_batch_and_keeps_the_step(caplog) -> None:
    from adaptlab.strategies.finetune.memory import run_with_memory_backoff

    caplog.set_level(logging.WARNING)
    group, seen, freed = list(range(16)), [], []
    result, micro = run_with_memory_backoff(_fake_step(3, group, seen), 16, max_halvings=5,
                                            on_oom=lambda old, new: freed.append((old, new)))
    assert micro == 2 and freed == [(16, 8), (8, 4), (4, 2)]
    assert result == sum(group) and seen == [[2] * 8]  # same 16 examples, 8x the accumulation
    assert "retrying the step with micro-batches of 2, i.e. 8x the gradient accumulation" in caplog.text
    _, micro = run_with_memory_backoff(_fake_step(3, list(range(7)), []), 7, max_halvings=5)
    assert micro == 2  # odd sizes round up: 7 -> 4 -> 2


def test_oom_policy_is_bounded_and_passes_other_errors_through() -> None:
    import torch

    from adaptlab.errors import ResourceError
    from adaptlab.strategies.finetune.memory import is_out_of_memory, run_with_memory_backoff

    calls: list[int] = []

    def always_oom(micro: int) -> None:
        calls.append(micro)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(ResourceError) as info:
        run_with_memory_backoff(always_oom, 64, max_halvings=2)
    assert calls == [64, 32, 16] and info.value.field == "batch_size"
    assert "after 2 halving(s)" in str(info.value) and "gradient_checkpointing" in str(info.value)
    calls.clear()
    with pytest.raises(ResourceError, match="micro-batches of 1"):
        run_with_memory_backoff(always_oom, 1, max_halvings=5)
    assert calls == [1]

    def broken(micro: int) -> None:
        calls.append(micro)
        raise ValueError("shape mismatch")

    calls.clear()
    with pytest.raises(ValueError):
        run_with_memory_backoff(broken, 8, max_halvings=5)
    assert calls == [8]
    assert is_out_of_memory(RuntimeError("MPS backend out of memory")) and not is_out_of_memory(MemoryError())


def test_training_under_a_memory_cap_matches_training_without_one(tiny_loaded, tmp_path: Path, caplog) -> None:
    """The real recipe with a simulated GPU that cannot fit more than 2 sequences at once."""
    import torch
    from fakes import TRAIN_ROWS, make_examples, sentiment_task

    from adaptlab.strategies import FitContext, LoraConfig

    task = sentiment_task(labels={"0": "negative", "1": "positive"})
    train = make_examples(TRAIN_ROWS)
    args = dict(batch_size=8, max_steps=2, learning_rate=1e-2, eval_metric=False, progress=False,
                save_every=0, log_every=1, device="cpu")
    lora = LoraConfig(dropout=0.0, **args)  # dropout masks would depend on how the batch is cut
    free = lora.fit(task, train, [], FitContext.of(tiny_loaded, work_dir=tmp_path / "free"))

    def cap(module, a, kwargs):
        ids = kwargs.get("input_ids", a[0] if a else None)
        if ids is not None and ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated cap of 2 sequences)")

    hook = tiny_loaded.model.model.register_forward_pre_hook(cap, with_kwargs=True)
    caplog.set_level(logging.WARNING)
    try:
        capped = lora.fit(task, train, [], FitContext.of(tiny_loaded, work_dir=tmp_path / "capped"))
    finally:
        hook.remove()
    assert capped.train_cost["micro_batch_size"] == 2 and capped.train_cost["oom_halvings"] == 2
    assert free.train_cost["micro_batch_size"] == 8 and free.train_cost["oom_halvings"] == 0
    assert capped.train_cost["tokens"] == free.train_cost["tokens"]  # the same examples per step
    losses = [[h["loss"] for h in a.history if "loss" in h] for a in (free, capped)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    weights = [{k: v for k, v in a.model.state_dict().items() if "lora" in k} for a in (free, capped)]
    assert weights[0] and all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])
    assert "out of memory with micro-batches of 8" in caplog.text
