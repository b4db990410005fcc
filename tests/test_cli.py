"""The real `adaptlab` command in a subprocess: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adaptlab", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )


def write_task(folder: Path, data_file: str, extra: str = "") -> Path:
    task = folder / "task.yaml"
    task.write_text(
        "name: t\ntype: classification\ninstruction: Classify.\n"
        f"data:\n  train: {data_file}\n  test: {data_file}\n{extra}"
        "input: '{{text}}'\nlabel_field: label\nlabels: {a: alpha, b: beta}\nmetric: accuracy\n"
    )
    return task


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    out = run_cli("--help")
    elapsed = time.perf_counter() - start
    assert out.returncode == 0
    for command in ("models", "validate", "prompt", "predict", "demo"):
        assert command in out.stdout
    assert elapsed < 10  # heavy libraries are not imported for --help (generous bound for a loaded CI box)
    probe = subprocess.run(
        [sys.executable, "-c", "import adaptlab.cli, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert probe.stdout.strip() == "False False"


def test_validate_sst2_counts(tasks_dir, shared_data):
    out = run_cli("validate", str(tasks_dir / "sst2.yaml"), "--no-model")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for count in ("6,920", "872", "1,821", "3,310", "3,610"):
        assert count in text


def test_validate_broken_jsonl_line_7(tmp_path):
    rows = [json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) for i in range(10)]
    rows[6] = '{"text": "broken", "label": '
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    task = write_task(tmp_path, "d.jsonl")
    out = run_cli("validate", str(task), "--no-model")
    assert out.returncode != 0
    assert "d.jsonl:7" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_latin1_read_as_utf8_suggests_encoding(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(
        b'{"text": "caf\xe9 ol\xe9", "label": "a"}\n{"text": "ok", "label": "b"}\n'
    )
    task = write_task(tmp_path, "d.jsonl")
    out = run_cli("validate", str(task), "--no-model")
    assert out.returncode != 0
    assert "encoding" in (out.stdout + out.stderr)
    assert "Traceback" not in out.stdout + out.stderr
    fixed = write_task(tmp_path, "d.jsonl", extra="  encoding: latin-1\n")
    assert run_cli("validate", str(fixed), "--no-model").returncode == 0


def test_unknown_task_key_is_one_line_error(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x", "label": "a"}\n')
    task = write_task(tmp_path, "d.jsonl")
    task.write_text(task.read_text().replace("label_field:", "lable_field:"))
    out = run_cli("validate", str(task), "--no-model")
    assert out.returncode == 1
    err = out.stderr.strip()
    assert "lable_field" in err and "label_field" in err and "task.yaml" in err
    assert "Traceback" not in err and len(err.splitlines()) <= 3


def test_unknown_model_is_one_line_error():
    out = run_cli("prompt", "--help")
    assert out.returncode == 0
    out = run_cli("predict", "/nonexistent/dir", "--text", "hi")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr


@pytest.mark.integration
def test_models_lists_default_available(default_loaded):
    out = run_cli("models")
    assert out.returncode == 0
    line = next(ln for ln in out.stdout.splitlines() if "smollm2-135m-instruct" in ln)
    assert "yes" in line


def _predict_round_trip(artifact: Path, tmp_path: Path, text: str, labels: set[str]) -> None:
    by_text = run_cli("predict", str(artifact), "--text", text)
    assert by_text.returncode == 0, by_text.stderr
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"id": "r1", "text": text}) + "\n" + json.dumps({"id": "r2", "text": "thanks"}) + "\n")
    preds = tmp_path / "preds.jsonl"
    out = run_cli("predict", str(artifact), "--input", str(rows), "--output", str(preds))
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [g["id"] for g in got] == ["r1", "r2"]
    assert all(g["pred"] in labels for g in got)
    # the same text gives the same prediction through --text and --input
    row = next(ln for ln in by_text.stdout.splitlines() if "text:1" in ln)
    assert got[0]["pred"] in row.split()


@pytest.mark.integration
@pytest.mark.parametrize("task_name", ["demo", "sst2"])
def test_prompt_then_predict_round_trip(task_name, tmp_path, tasks_dir, default_loaded):
    from adaptlab.data import builtin_task, load_task

    task_file = "demo" if task_name == "demo" else str(tasks_dir / "sst2.yaml")
    task = builtin_task("demo") if task_name == "demo" else load_task(task_file)
    if task_name == "demo":
        from importlib import resources

        task_file = str(resources.files("adaptlab") / "demo" / "task.yaml")
    art = tmp_path / "art"
    out = run_cli("prompt", task_file, "--out", str(art), "--strategy", "few_shot", "--shots", "4",
                  "--selection", "balanced", "--calibrate", "--limit", "30")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((art / "metrics.json").read_text())
    adapted = json.loads((art / "adapted.json").read_text())
    assert metrics["n"] == 30 and len(metrics["predictions"]) == 30
    assert 0.0 <= metrics["metric"]["ci_low"] <= metrics["metric"]["value"] <= metrics["metric"]["ci_high"] <= 1.0
    assert len(adapted["demonstrations"]) == 4
    _predict_round_trip(art, tmp_path, "I was charged twice, please fix my bill", set(task.label_keys))


@pytest.mark.parametrize("method", ["lora", "full", "prompt_tuning", "ia3", "embedding_probe"])
def test_finetune_then_predict_round_trip_on_demo(method, tmp_path, tiny_loaded):
    from importlib import resources

    from adaptlab.data import builtin_task

    task_file = str(resources.files("adaptlab") / "demo" / "task.yaml")
    art = tmp_path / method
    steps = [] if method == "embedding_probe" else ["--set", "min_steps=null"]  # one epoch as written
    out = run_cli("finetune", task_file, "--model", "tiny-random-llama", "--method", method,
                  "--n-train", "16", "--epochs", "1", "--limit", "12", "--out", str(art), *steps)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((art / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["strategy"] == method
    assert metrics["cost"]["train"]["trainable_params"] > 0
    assert (art / "README.md").is_file()
    _predict_round_trip(art, tmp_path, "my package never arrived", set(builtin_task("demo").label_keys))
