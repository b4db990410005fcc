"""A new user's path (issue 13): from a CSV to a recommendation in two commands, never a silent wrong result.

- A template that names a missing field stops `prompt`, `finetune` and `compare` (the check `validate` runs).
- A run folder is written aside and moved into place when complete: an earlier run is kept unless `--force`, and
  a run that crashes leaves it byte-identical.
- `predict` on a damaged artifact, a binary data file, a CSV field of 1 MB, `seeds: "0,1"`, a mistyped model
  name: one line each, at once.
- `adaptlab init data.csv` then `adaptlab compare task.yaml --preset quick` (tiny model) ends in a recommendation.
- Real data files: `label_transform`, `on_bad_rows: skip`, a cp1252 file read as latin-1.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INTENTS = {"refund": ["I want my money back for order {}", "please refund the charge on invoice {}"],
           "shipping": ["where is my parcel {}", "my package {} has not arrived yet"],
           "login": ["I cannot sign in to account {}", "the password reset for {} fails"]}


def adaptlab(*args: str, cwd: Path | None = None, columns: int = 200, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "adaptlab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def tickets_csv(path: Path, n: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for i in range(n):
            label = rng.choice(sorted(INTENTS))
            writer.writerow([i, rng.choice(INTENTS[label]).format(i), label])
    return path


def task_yaml(folder: Path, *, input_template: str = "{{ text }}", extra: str = "") -> Path:
    tickets_csv(folder / "tickets.csv")
    path = folder / "task.yaml"
    path.write_text(f"""name: tickets
type: classification
instruction: Route the support ticket.
data: {{train: tickets.csv, test_size: 12{extra}}}
input: "{input_template}"
labels: {{refund: refund, shipping: shipping, login: login}}
metric: accuracy
""", encoding="utf-8")
    return path


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- silent wrong results and lost work ------------------------------------------------------------------------

def test_a_template_field_no_row_has_stops_every_command_that_spends_compute(tmp_path: Path) -> None:
    task = task_yaml(tmp_path, input_template="{{subject}}: {{text}}")
    fragments = ("tickets.csv:", "[input]", "prints field 'subject' but no", "columns: id, label, text")
    one_line_error(adaptlab("prompt", str(task), "--model", "tiny-random-llama", "--out", str(tmp_path / "p")), *fragments)
    one_line_error(adaptlab("finetune", str(task), "--model", "tiny-random-llama", "--n-train", "8",
                            "--out", str(tmp_path / "f")), *fragments)
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: e\ntask: task.yaml\nmodel: tiny-random-llama\nstrategies: [zero_shot]\n")
    one_line_error(adaptlab("compare", str(exp), "--out", str(tmp_path / "c")), *fragments)
    assert not any((tmp_path / d).exists() for d in ("p", "f", "c"))  # nothing was written
    validate = adaptlab("validate", str(task), "--no-model")
    assert validate.returncode == 1 and "subject" in validate.stderr  # validate agrees (on stderr)


def test_a_template_that_fails_on_a_row_gives_the_same_message_from_prompt_and_finetune(tmp_path: Path) -> None:
    task = task_yaml(tmp_path, input_template="{{ text.upper(1, 2, 3) }}")
    a = adaptlab("prompt", str(task), "--model", "tiny-random-llama", "--out", str(tmp_path / "p"))
    b = adaptlab("finetune", str(task), "--model", "tiny-random-llama", "--out", str(tmp_path / "f"))
    one_line_error(a, "[input]", "cannot render the input template")
    assert a.stderr == b.stderr  # one message everywhere, never "internal error"


def test_an_earlier_run_is_kept_unless_forced_and_a_crash_leaves_it_byte_identical(tmp_path: Path) -> None:
    task, out = task_yaml(tmp_path), tmp_path / "run"
    first = adaptlab("prompt", str(task), "--model", "tiny-random-llama", "--strategy", "zero_shot", "--out", str(out))
    assert first.returncode == 0, first.stderr
    before = folder_digest(out)
    again = adaptlab("prompt", str(task), "--model", "tiny-random-llama", "--strategy", "zero_shot", "--out", str(out))
    one_line_error(again, str(out), "[--out]", "already holds an earlier run", "--force")
    crash = adaptlab("prompt", str(task), "--model", "tiny-random-llama", "--strategy", "few_shot",  # fails mid-fit
                     "--option", "k=4", "--option", "selection=knn", "--option", "embedder=no-such-embedder",
                     "--out", str(out), "--force")
    assert crash.returncode == 1 and "no-such-embedder" in crash.stderr
    assert folder_digest(out) == before  # the crashed run replaced nothing
    assert not (tmp_path / ".run.partial").exists()
    forced = adaptlab("prompt", str(task), "--model", "tiny-random-llama", "--strategy", "few_shot",
                      "--shots", "2", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "adapted.json").read_text())["strategy"] == "few_shot"
    assert json.loads((out / "metrics.json").read_text())["strategy"] == "few_shot"  # never a mix of two runs


def test_predict_on_an_artifact_without_its_task_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapted.json").write_text(json.dumps({"kind": "prompt", "model": "tiny-random-llama"}))
    one_line_error(adaptlab("predict", str(tmp_path / "a"), "--text", "hi"), "adapted.json", "[task]",
                   "missing key 'task'")


# -- bad input that needs a better answer ---------------------------------------------------------------------

def test_binary_data_long_fields_seeds_and_mistyped_models(tmp_path: Path) -> None:
    task = task_yaml(tmp_path)
    (tmp_path / "tickets.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 40)
    one_line_error(adaptlab("validate", str(task), "--no-model"), "tickets.csv", "not a text file")
    tickets_csv(tmp_path / "tickets.csv")
    with open(tmp_path / "tickets.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([999, "refund " + "x" * 1_000_000, "refund"])  # one field of 1 MB
    out = adaptlab("validate", str(task), "--no-model")
    assert out.returncode == 0, out.stderr
    exp = tmp_path / "exp.yaml"
    exp.write_text('name: e\ntask: task.yaml\nseeds: "0,1"\nstrategies: [zero_shot]\n')
    one_line_error(adaptlab("compare", str(exp)), "exp.yaml:3", "[seeds]", "e.g. seeds: [0, 1, 2]")
    started = time.perf_counter()
    out = adaptlab("prompt", str(task), "-m", "no-such-model", "--out", str(tmp_path / "o"))
    assert time.perf_counter() - started < 20  # no minute of hub retries
    one_line_error(out, "[model]", "unknown model 'no-such-model'", "adaptlab models")
    one_line_error(adaptlab("prompt", str(task), "-m", "smollm2-135m", "--out", str(tmp_path / "o")),
                   "did you mean 'smollm2-135m-instruct'?")


def test_validate_on_a_data_file_points_to_init(tmp_path: Path) -> None:
    data = tickets_csv(tmp_path / "tickets.csv")
    one_line_error(adaptlab("validate", str(data)), "tickets.csv", "data file, not a task file",
                   f"adaptlab init {data}")


def test_compare_takes_the_model_and_backend_on_the_command_line(tmp_path: Path) -> None:
    task_yaml(tmp_path)
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: e\ntask: task.yaml\nstrategies: [zero_shot]\n")
    out = adaptlab("compare", str(exp), "--backend", "api", "--out", str(tmp_path / "run"))
    assert out.returncode == 3 and "--base-url" in out.stdout + out.stderr  # the cell says which flag to pass
    bad = adaptlab("compare", str(exp), "--backend", "api", "--base-url", "localhost:8000", "--out", str(tmp_path / "r2"))
    one_line_error(bad, "[base_url]", "http(s) URL")


# -- real data files ------------------------------------------------------------------------------------------

def test_label_transform_bad_rows_and_a_cp1252_file(tmp_path: Path) -> None:
    from adaptlab.data import load_splits, load_task
    from adaptlab.errors import DataError

    rows = ["LOC:city Where is Paris?", "HUM:ind Who wrote Hamlet?", "LOC:country Where is Peru?",
            "HUM:gr Who won the cup?", "NUM:date When was 1066?", "NUM:count How many legs?"]
    (tmp_path / "train.txt").write_text("\n".join(rows * 3 + ["ABBR:exp"]) + "\n", encoding="utf-8")
    task = tmp_path / "t.yaml"
    task.write_text("""name: trec
type: classification
data: {train: train.txt, format: label_text, test_size: 3, label_transform: "{{ label.split(':')[0] }}"}
input: "{{ text }}"
labels: {LOC: location, HUM: person, NUM: number}
metric: accuracy
""")
    with pytest.raises(DataError, match="expected '<label> <text>'") as err:
        load_splits(load_task(task))
    assert err.value.line == 19
    task.write_text(task.read_text().replace("test_size: 3,", "test_size: 3, on_bad_rows: skip,"))
    splits = load_splits(load_task(task))
    assert len(splits.train) + len(splits.dev) + len(splits.test) == 18  # the bad row dropped, reported in the log
    assert {ex.fields["label"] for ex in splits.train} == {"LOC", "HUM", "NUM"}
    text = "text,label\n" + "\u201cGreat\u201d \u2014 loved it,pos\nawful,neg\n" * 5
    (tmp_path / "r.csv").write_bytes(text.encode("cp1252"))
    (tmp_path / "r.yaml").write_text("name: r\ntype: classification\ndata: {train: r.csv, test_size: 2, "
                                     "encoding: latin-1}\ninput: '{{text}}'\nlabels: {pos: good, neg: bad}\n"
                                     "metric: accuracy\n")
    with pytest.raises(DataError, match="cp1252"):
        load_splits(load_task(tmp_path / "r.yaml"))
    (tmp_path / "r.yaml").write_text((tmp_path / "r.yaml").read_text().replace("encoding: latin-1", "encoding: cp1252"))
    decoded = load_splits(load_task(tmp_path / "r.yaml"))
    assert any("\u201cGreat\u201d \u2014" in ex.fields["text"] for _, exs in decoded.items() for ex in exs)
    (tmp_path / "r.yaml").write_text((tmp_path / "r.yaml").read_text().replace(", encoding: cp1252", ""))
    with pytest.raises(DataError, match="encoding: cp1252"):
        load_splits(load_task(tmp_path / "r.yaml"))


# -- from a CSV to a recommendation -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("newuser")
    tickets_csv(folder / "tickets.csv", n=80)
    init = adaptlab("init", "tickets.csv", cwd=folder)
    assert init.returncode == 0, init.stderr
    assert "label column 'label'" in init.stdout and "text column 'text'" in init.stdout
    run = adaptlab("compare", "task.yaml", "--preset", "quick", "--model", "tiny-random-llama", "--out", "run",
                   cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    return folder, run


def test_init_then_compare_quick_ends_in_a_recommendation(quick_run) -> None:
    folder, run = quick_run
    task = (folder / "task.yaml").read_text()
    assert "test_size:" in task and '"refund": "refund"' in task and "# TODO" in task
    assert "Recommendation (measured):" in run.stdout
    experiment = (folder / "run" / "experiment.yaml").read_text()
    assert "preset 'quick'" in experiment and "embedding_probe" in experiment
    results = json.loads((folder / "run" / "results.json").read_text())
    assert results["recommendation"]["decision"] in ("prompt", "finetune", "collect_labels", "too_close")
    assert results["recommendation"]["evidence"]  # 16 test examples and one seed: said plainly
    rerun = adaptlab("compare", "run/experiment.yaml", "--out", "run", "--resume", "--model", "tiny-random-llama",
                     cwd=folder)
    assert rerun.returncode == 0, rerun.stderr  # the written preset is an ordinary experiment file


def _words_intact(text: str, words: list[str]) -> None:
    for word in words:
        assert word in text, f"'{word}' is split or missing"


def test_output_fits_80_columns_without_splitting_words(quick_run) -> None:
    folder, _ = quick_run
    outputs = {
        "compare": adaptlab("compare", "run/experiment.yaml", "--out", "run", "--resume", "--model",
                            "tiny-random-llama", cwd=folder, columns=80),
        "models": adaptlab("models", columns=80),
        "recommend": adaptlab("recommend", "run", cwd=folder, columns=80),
        "help": adaptlab("--help", columns=80),
        "prompt --help": adaptlab("prompt", "--help", columns=80),
        "finetune --help": adaptlab("finetune", "--help", columns=80),
        "compare --help": adaptlab("compare", "--help", columns=80),
    }
    for name, out in outputs.items():
        assert out.returncode == 0, (name, out.stderr)
        long = [ln for ln in (out.stdout + out.stderr).splitlines() if len(ln) > 80]
        assert not long, (name, long)
    _words_intact(outputs["compare"].stdout, ["embedding_probe", "zero_shot", "balanced"])
    _words_intact(outputs["models"].stdout, ["smollm2-135m-instruct", "tiny-random-llama"])
    _words_intact(outputs["prompt --help"].stdout, ["--trust-remote-code", "--allow-pickle", "--calibrate"])
    assert "<bool>" not in outputs["prompt --help"].stdout  # flags show as flags
    rec = outputs["recommend"].stdout
    assert "too_close" not in rec and "prefix_cache)" not in rec


def test_debug_works_after_the_command(tmp_path: Path) -> None:
    out = adaptlab("validate", str(task_yaml(tmp_path)), "--no-model", "--debug")
    assert out.returncode == 0 and "DEBUG" in out.stderr


def test_predict_reads_csv_and_tsv_inputs_and_writes_the_input_text(quick_run, tmp_path: Path) -> None:
    folder, _ = quick_run
    (tmp_path / "new.csv").write_text("id,text\n7,where is my parcel 12\n8,I want my money back for order 3\n")
    (tmp_path / "new.tsv").write_text("text\tnote\nthe password reset for me fails\tx\n")
    for name, n in (("new.csv", 2), ("new.tsv", 1)):
        out = adaptlab("predict", str(folder / "run" / "best"), "--input", str(tmp_path / name),
                       "--output", str(tmp_path / "p.jsonl"))
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
        assert len(rows) == n and all(r["pred"] in INTENTS for r in rows)
        assert rows[0]["input"] in ("where is my parcel 12", "the password reset for me fails")
    (tmp_path / "bad.csv").write_text("body\nwhere\n")
    one_line_error(adaptlab("predict", str(folder / "run" / "best"), "--input", str(tmp_path / "bad.csv")),
                   "bad.csv", "[text]", "no input row has")


def test_validate_checks_an_experiment_file_and_counts_its_cells(tmp_path: Path) -> None:
    """`adaptlab validate EXP.yaml` expands the grid (sizes, seeds, options) before any compute and lists the
    cells per variant; a size beyond the data is the usual one-line error naming the file and line."""
    out = adaptlab("validate", str(REPO / "experiments" / "demo.yaml"), "--no-model")
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert "experiments/demo.yaml" in first and " cells, " in first and "196 test examples each" in first
    assert re.search(r"^\s+1\s+zero_shot$", out.stdout, re.M)  # no labels: one cell
    bad = tmp_path / "exp.yaml"
    bad.write_text((REPO / "experiments" / "demo.yaml").read_text().replace("[32, 128, all]", "[32, 100000]"))
    one_line_error(adaptlab("validate", str(bad), "--no-model"), "exp.yaml:7", "train_sizes", "100000")
