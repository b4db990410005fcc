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
