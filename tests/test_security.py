"""Security: no model code or pickle runs without an explicit flag, API keys never reach outputs, and
artifacts cannot reach files outside their own folder.

Each "would run code" case plants a payload that writes a marker file when executed, so the tests
check the real consequence (code ran or not), not which argument a function received.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from adaptlab.errors import AdaptlabError, ModelError
from adaptlab.strategies import load_adapted

try:
    from test_api_faults import FaultServer
    from test_bad_input import ADAPTLAB, assert_one_line_error, cli, rows, write_task  # noqa: F401 (fixture)
except ImportError:  # tests/ imported as a package
    from tests.test_api_faults import FaultServer
    from tests.test_bad_input import ADAPTLAB, assert_one_line_error, cli, rows, write_task  # noqa: F401

PLANTED_KEY = "sk-planted-123-adaptlab-do-not-leak"


def small_task(folder: Path) -> Path:
    (folder / "train.jsonl").write_text(rows(8))
    (folder / "test.jsonl").write_text(rows(4))
    return write_task(folder)


# ------------------------------------------------------------------------------------------------
# model folders that would run code: remote code and pickle weights
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evil_model(tiny_loaded, tmp_path_factory) -> Path:
    """The tiny model saved with a custom ``auto_map`` whose module writes EXECUTED when imported."""
    folder = tmp_path_factory.mktemp("remote-code")
    tiny_loaded.model.save_pretrained(folder)
    tiny_loaded.tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil_llama", architectures=["EvilModel"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(folder / 'EXECUTED')!r}).write_text('remote code ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil_llama'\n\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    return folder


@pytest.fixture(scope="module")
def pickled_model(tiny_loaded, tmp_path_factory) -> Path:
    """The tiny model with pickle weights only (``pytorch_model.bin``), as older checkpoints ship."""
    import torch

    folder = tmp_path_factory.mktemp("pickled")
    tiny_loaded.model.config.save_pretrained(folder)
    tiny_loaded.tokenizer.save_pretrained(folder)
    torch.save(tiny_loaded.model.state_dict(), folder / "pytorch_model.bin")
    assert not list(folder.glob("*.safetensors"))
    return folder


def test_remote_code_is_refused_by_default_and_runs_only_with_the_flag(cli, evil_model, tmp_path) -> None:
    from adaptlab.lm.factory import build_lm
    from adaptlab.models import load_model

    marker = evil_model / "EXECUTED"
    with pytest.raises(ModelError, match="--trust-remote-code"):
        load_model(str(evil_model))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        build_lm(str(evil_model))  # the factory's default is off too
    task = str(small_task(tmp_path))
    out = cli("prompt", task, "--model", str(evil_model), "--strategy", "zero_shot", "--out", str(tmp_path / "a"))
    assert_one_line_error(out, "--trust-remote-code", "refused by default")
    out = cli("finetune", task, "--model", str(evil_model), "--n-train", "4", "--out", str(tmp_path / "b"))
    assert_one_line_error(out, "--trust-remote-code")
    assert not marker.exists()  # nothing from the folder ran

    out = cli("prompt", task, "--model", str(evil_model), "--strategy", "zero_shot", "--limit", "2",
              "--trust-remote-code", "--out", str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "remote code ran"  # the flag really reaches the loader
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["n"] == 2


def test_pickle_weights_are_refused_unless_allowed(cli, pickled_model, tmp_path) -> None:
    task = str(small_task(tmp_path))
    for command, extra in (("prompt", ["--strategy", "zero_shot"]), ("finetune", ["--n-train", "4"])):
        out = cli(command, task, "--model", str(pickled_model), *extra, "--out", str(tmp_path / command))
        assert_one_line_error(out, "no safetensors weights", "--allow-pickle")
        assert not (tmp_path / command / "adapted.json").exists()
    out = cli("prompt", task, "--model", str(pickled_model), "--strategy", "zero_shot", "--limit", "2",
              "--allow-pickle", "--out", str(tmp_path / "ok"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "ok" / "adapted.json").read_text())["model"] == str(pickled_model)


def test_finetune_passes_allow_pickle_to_the_loader(pickled_model, tmp_path) -> None:
    from adaptlab.models import ModelSpec
    from adaptlab.strategies import ModelPool

    # fine-tuning takes fresh weights from the pool's spec: allow_pickle must reach load_model
    with pytest.raises(ModelError, match="--allow-pickle"):
        ModelPool.of(ModelSpec(name=str(pickled_model))).trainable()
    loaded = ModelPool.of(ModelSpec(name=str(pickled_model), allow_pickle=True)).trainable()
    assert loaded.path == pickled_model.resolve()


# ------------------------------------------------------------------------------------------------
# API keys: read from the environment, never written anywhere
# ------------------------------------------------------------------------------------------------

def test_api_key_is_used_but_never_written_to_outputs_or_logs(tmp_path: Path) -> None:
    server = FaultServer("ok").start()
    try:
        out_dir = tmp_path / "run"
        env = {**os.environ, "ADAPTLAB_TEST_KEY": PLANTED_KEY, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
        proc = subprocess.run(
            [*ADAPTLAB, "-v", "--debug", "prompt", str(small_task(tmp_path)), "--out", str(out_dir),
             "--backend", "api", "--api-base", server.base_url, "--api-key-env", "ADAPTLAB_TEST_KEY",
             "--model", "fake", "--strategy", "few_shot", "--shots", "2", "--calibrate"],
            capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert any(h.get("Authorization") == f"Bearer {PLANTED_KEY}" for *_, h in server.requests)  # it was used
        assert "DEBUG" in proc.stderr  # the debug log was on, and still shows no key
        files = [p for p in out_dir.rglob("*") if p.is_file()]
        assert {"adapted.json", "metrics.json"} <= {p.name for p in files}
        for text in [proc.stdout, proc.stderr, *(p.read_bytes().decode("utf-8", "replace") for p in files)]:
            assert PLANTED_KEY not in text
            assert PLANTED_KEY[3:15] not in text  # not even a fragment
    finally:
        server.close()


def test_api_key_never_reaches_a_two_model_run_its_teacher_cache_or_cascade(tmp_path: Path) -> None:
    """The new paths of a compare run with models by role: the distillation teacher's label cache, the cascade's
    saved large-model artifact, the store, the report and best/ hold no trace of the key."""
    server = FaultServer("ok").start()
    try:
        task = tmp_path / "task"
        task.mkdir()
        (task / "train.jsonl").write_text(rows(40))
        (task / "test.jsonl").write_text(rows(4))
        exp = tmp_path / "exp.yaml"
        lora = "{name: lora, options: {rank: 2, max_steps: 1, select_on_dev: false}}"
        exp.write_text(
            f"name: keys\ntask: {write_task(task)}\nmodels:\n"
            f"  large: {{name: fake, backend: api, base_url: '{server.base_url}', api_key_env: ADAPTLAB_TEST_KEY,\n"
            "          price: {input_per_mtok: 1, output_per_mtok: 2}, api: {max_retries: 0}}\n"
            "  small: tiny-random-llama\ntrain_sizes: [8]\nseeds: [0]\n"
            "evaluation: {latency_sample: 0, throughput_sample: 0}\nstrategies:\n"
            "  - {name: zero_shot, model: large}\n"
            f"  - {{name: distill, model: small, options: {{teacher: {{name: zero_shot, model: large}}, student: {lora}, "
            "pool: 6, source: train}}\n"
            f"  - {{name: cascade, model: small, options: {{small: {lora}, large: {{name: zero_shot, model: large}}, "
            "dev_limit: 4}}\n", encoding="utf-8")
        env = {**os.environ, "ADAPTLAB_TEST_KEY": PLANTED_KEY, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
        out_dir = tmp_path / "run"
        proc = subprocess.run([*ADAPTLAB, "-v", "--debug", "compare", str(exp), "--out", str(out_dir)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert any(h.get("Authorization") == f"Bearer {PLANTED_KEY}" for *_, h in server.requests)
    finally:
        server.close()
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    names = {p.relative_to(out_dir).parts[0] for p in files}
    assert {"cache", "cells", "best", "report.html", "results.json"} <= names, names
    assert any(p.suffix == ".jsonl" and "teacher" in p.parts for p in files)  # the teacher's label cache
    for text in [proc.stdout, proc.stderr, *(p.read_bytes().decode("utf-8", "replace") for p in files)]:
        assert PLANTED_KEY not in text and PLANTED_KEY[3:15] not in text


def test_a_server_quoting_the_key_back_is_redacted(cli, tmp_path: Path, monkeypatch, caplog) -> None:
    server = FaultServer("echo_key").start()
    try:
        monkeypatch.setenv("ADAPTLAB_TEST_KEY", PLANTED_KEY)
        out = cli("prompt", str(small_task(tmp_path)), "--out", str(tmp_path / "o"), "--backend", "api",
                  "--api-base", server.base_url, "--api-key-env", "ADAPTLAB_TEST_KEY", "--model", "fake",
                  "--strategy", "zero_shot")
    finally:
        server.close()
    assert server.requests and out.returncode == 1
    assert "HTTP 400" in out.stderr and "bad request from Bearer ***" in out.stderr
    assert PLANTED_KEY not in out.stderr + out.stdout + caplog.text


# ------------------------------------------------------------------------------------------------
# artifacts cannot reach outside their folder, and never unpickle
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def prompt_artifact(tmp_path: Path) -> Path:
    """A real few-shot prompt artifact (fitted through a scripted LM)."""
    from fakes import SENTIMENT_KEYWORDS, ScriptedLM

    from adaptlab.data import load_task
    from adaptlab.experiment.single import SingleRun, run_single
    from adaptlab.strategies import ModelPool

    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in
                                                [("good fun", "b"), ("bad dull", "a"), ("great", "b"), ("awful", "a")]))
    (folder / "test.jsonl").write_text(rows(4))
    task = load_task(write_task(folder))
    lm = ScriptedLM({"alpha": SENTIMENT_KEYWORDS["negative"], "beta": SENTIMENT_KEYWORDS["positive"]})
    run_single(task, "few_shot", {"k": 2}, ModelPool.of(lm),
               SingleRun(out_dir=tmp_path / "art", progress=False, latency_sample=0))
    return tmp_path / "art"


def _knn(data: dict, embeddings_file: str) -> dict:
    demos = data["demonstrations"]
    return {**data, "knn": {"embedder": "minilm-l6", "k": 1, "order": "similar_last", "seed": 0,
                            "embeddings_file": embeddings_file, "pool": demos}}


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.npy"])
def test_prompt_artifact_cannot_name_a_file_outside_its_folder(prompt_artifact: Path, name: str) -> None:
    path = prompt_artifact / "adapted.json"
    path.write_text(json.dumps(_knn(json.loads(path.read_text()), name)))
    with pytest.raises(AdaptlabError) as info:
        load_adapted(prompt_artifact)
    # the prompt artifact now checks its files with the shared artifacts.artifact_path (same wording as the
    # fine-tuned and probe artifacts below); it was "must be a file inside the artifact folder"
    assert info.value.field == "knn.embeddings_file" and "points outside the artifact folder" in str(info.value)


def test_symlink_out_of_the_artifact_is_refused(prompt_artifact: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.npy"
    np.save(outside, np.ones((2, 3), dtype=np.float32))
    (prompt_artifact / "knn_embeddings.npy").symlink_to(outside)
    path = prompt_artifact / "adapted.json"
    path.write_text(json.dumps(_knn(json.loads(path.read_text()), "knn_embeddings.npy")))
    with pytest.raises(AdaptlabError, match="points outside the artifact folder") as info:
        load_adapted(prompt_artifact)
    assert info.value.field == "knn.embeddings_file"


def test_finetuned_and_probe_artifacts_cannot_reach_outside(prompt_artifact: Path, tmp_path: Path, cli) -> None:
    prompt = json.loads((prompt_artifact / "adapted.json").read_text())
    art = tmp_path / "ft"
    art.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (art / "adapter").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    doc = {"kind": "finetuned", "method": "lora", "weights": "adapter", "model": "tiny-random-llama",
           "prompt": prompt}
    (art / "adapted.json").write_text(json.dumps(doc))
    with pytest.raises(AdaptlabError) as info:
        load_adapted(art)
    assert info.value.field == "weights" and "outside the artifact folder" in str(info.value)
    (art / "adapted.json").write_text(json.dumps({**doc, "weights": "../elsewhere"}))
    with pytest.raises(AdaptlabError, match="unknown weights kind"):
        load_adapted(art)

    probe = tmp_path / "probe"
    probe.mkdir()
    for weights in ("../../etc/passwd", "/etc/passwd"):
        (probe / "adapted.json").write_text(json.dumps({
            "kind": "embedding_probe", "model": "minilm-l6", "weights": weights, "classes": ["a", "b"],
            "task": {"name": "t", "type": "classification", "input": "{{ text }}", "labels": []}}))
        with pytest.raises(AdaptlabError) as info:
            load_adapted(probe)
        assert info.value.field == "weights" and "outside the artifact folder" in str(info.value)
        out = cli("predict", str(probe), "--text", "hello")  # the CLI: one line, no traceback
        assert_one_line_error(out, "adapted.json", "[weights]", "outside the artifact folder")


def test_artifact_files_are_never_unpickled(prompt_artifact: Path, tmp_path: Path) -> None:
    marker = tmp_path / "UNPICKLED"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "pickle ran"))

    np.save(prompt_artifact / "knn_embeddings.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    path = prompt_artifact / "adapted.json"
    path.write_text(json.dumps(_knn(json.loads(path.read_text()), "knn_embeddings.npy")))
    with pytest.raises(Exception, match="allow_pickle"):
        load_adapted(prompt_artifact)
    assert not marker.exists()
    with open(tmp_path / "check.pkl", "wb") as f:  # the payload is live: unpickling it would run it
        pickle.dump(Payload(), f)
    with open(tmp_path / "check.pkl", "rb") as f:
        pickle.load(f)  # noqa: S301 (deliberately, on our own payload)
    assert marker.read_text() == "pickle ran"


def test_option_values_are_never_evaluated(tmp_path: Path) -> None:
    """``--option`` values are YAML scalars/lists (safe_load), never evaluated as Python."""
    marker = tmp_path / "EVALUATED"
    task = small_task(tmp_path)
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    proc = subprocess.run([*ADAPTLAB, "prompt", str(task), "--out", str(tmp_path / "o"), "--strategy", "few_shot",
                           "--option", f"k={payload}"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "[k]" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    yaml_payload = "!!python/object/apply:os.system ['touch " + str(marker) + "']"
    proc = subprocess.run([*ADAPTLAB, "prompt", str(task), "--out", str(tmp_path / "o"), "--strategy", "few_shot",
                           "--option", f"k={yaml_payload}"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert not marker.exists()
