"""``distill``: a scripted teacher labels a pool, a student trains on it; the label cache is shared, resumable and
charged; config errors name the field."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from adaptlab.data import load_splits, load_task
from adaptlab.errors import ConfigError, DataError
from adaptlab.lm.base import NoModelLM
from adaptlab.metrics import compute
from adaptlab.models.spec import ModelSpec
from adaptlab.strategies import (ArtifactKind, FitContext, ModelPool, Prediction, StrategyConfig, get_strategy,
                                 load_adapted, strategy)
from fakes import SENTIMENT_KEYWORDS, ScriptedLM
from test_finetune_toy import one_thread_torch

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread_torch)

POS, NEG, FILL = ["good", "great", "fun"], ["bad", "awful", "dull"], ["film", "plot", "cast", "score", "story"]


def _rows(n: int, prefix: str, *, labels: bool = True) -> list[dict]:
    """Sentiment rows; every 5th gold label disagrees with its keyword (so the teacher's agreement is < 1)."""
    rows = []
    for i in range(n):
        kw = 1 if i % 2 == 0 else 0
        word = (POS if kw else NEG)[i % 3]
        row = {"id": f"{prefix}{i}", "text": f"{word} {FILL[i % 5]}"}
        if labels:
            row["label"] = str(1 - kw if i % 5 == 4 else kw)
        rows.append(row)
    return rows


def write_task(folder: Path, *, unlabeled: bool = False, n_train: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": _rows(n_train, "t"), "dev": _rows(6, "d"), "test": _rows(6, "x")}
    if unlabeled:
        files["unlabeled"] = _rows(20, "u", labels=False)
    for name, rows in files.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = "\n".join(f"  {name}: {name}.jsonl" for name in files)
    (folder / "task.yaml").write_text(textwrap.dedent("""\
        name: senti
        type: classification
        instruction: Classify the sentiment.
        input: "{{ text }}"
        labels: {0: negative, 1: positive}
        metric: accuracy
        data:
        """) + data + "\n", encoding="utf-8")
    return folder / "task.yaml"


def keyword_label(text: str) -> str:
    return "1" if text.split()[0] in POS else "0"


# -- a recording student: an honest stand-in that keeps what it was trained on (no model, no compute) ----------
SEEN: list[dict] = []


@dataclass
class _Recorded:
    kind = "recorded"
    strategy = "recording_student"
    model_name: str
    config: dict
    n: int

    @property
    def lm(self):
        return NoModelLM(self.model_name)

    def predict(self, examples, *, progress=False):
        return [Prediction(id=ex.id, pred="1") for ex in examples]

    def cost(self):
        return {"train": {"seconds": 2.0, "flops": 100, "peak_memory_bytes": 10},
                "labels": {"train": self.n, "dev": 3}, "fit": {"method": "recording"}}

    def save(self, directory):
        return Path(directory)


@strategy("recording_student", family="finetune", artifact=ArtifactKind("recorded", lambda d, data, b: None))
class RecordingStudent(StrategyConfig):
    """Records its training examples."""

    tag: str = "a"
    epochs: int = 1

    def learns_labels(self) -> bool:
        return True

    def fit(self, task, train, dev, ctx):
        SEEN.append({"ids": [ex.id for ex in train], "seed": ctx.seed, "role": ctx.role, "epochs": self.epochs,
                     "labels": {ex.id: task.label_of(ex) if task.type == "classification" else task.target_of(ex)
                                for ex in train}})
        return _Recorded("student-model", self.to_dict(), len(train))


def distill(**kw):
    opts = {"teacher": {"name": "zero_shot", "model": "large"}, "student": {"name": "recording_student"},
            "pool": 8}
    opts.update(kw)
    return get_strategy("distill").parse(opts)


def scripted_ctx(teacher: ScriptedLM, cache: Path | None, *, seed: int = 0, student=None) -> FitContext:
    lms = {"large": teacher, **({} if student is not None else {"default": ScriptedLM(SENTIMENT_KEYWORDS)})}
    pool = ModelPool({"default": ModelSpec(name="tiny-random-llama")} if student is not None else None, lms=lms,
                     loaded={"default": student} if student is not None else None)
    return FitContext(models=pool, seed=seed, cache_dir=cache)


def cache_lines(cache: Path) -> list[str]:
    files = list((cache / "teacher").glob("*.jsonl"))
    assert len(files) == 1, files
    return files[0].read_text(encoding="utf-8").splitlines()


# -- (a) a real student: predicts, saves, loads; cost and labels accounted -----------------------------------------
def test_distill_into_lora_predicts_and_accounts(tmp_path, tiny_loaded):
    from adaptlab.evaluate import EvalSettings, evaluate
    from adaptlab.strategies.distill import Distilled

    task = load_task(write_task(tmp_path / "task"))
    splits = load_splits(task)
    teacher = ScriptedLM(SENTIMENT_KEYWORDS)
    train = {"batch_size": 8, "progress": False, "log_every": 1, "save_every": 0, "eval_limit": 4, "max_steps": 2,
             "learning_rate": 5e-2}
    cfg = distill(student={"name": "lora", "options": {"rank": 4, **train}}, pool=16, epochs=1)
    assert cfg.student_config.epochs == 1 and cfg.label_use().mode == "none" and cfg.label_use().seeded
    cache = tmp_path / "cache"
    adapted = cfg.fit(task, [], splits.dev, scripted_ctx(teacher, cache, student=tiny_loaded))
    assert isinstance(adapted, Distilled) and adapted.model_name == "tiny-random-llama"
    preds = adapted.predict(splits.test)
    assert [p.id for p in preds] == [ex.id for ex in splits.test] and {p.pred for p in preds} <= {"0", "1"}

    cost, student = adapted.cost(), adapted.student.cost()
    train_cost, search = cost["train"], cost["search"]
    assert teacher.usage.requests == 16 and len(cache_lines(cache)) == 16
    assert train_cost["api_input_tokens"] == pytest.approx(teacher.usage.prompt_tokens)
    assert train_cost["api_output_tokens"] == 0 and train_cost["token_price"] is None
    assert train_cost["teacher_cached"] == 0 and train_cost["teacher_labelled"] == 16
    assert train_cost["seconds"] == pytest.approx(student["train"]["seconds"] + search["teacher_seconds"])
    assert train_cost["flops"] > student["train"]["flops"]  # the teacher's forward passes are added
    assert cost["labels"] == {"train": 0, "dev": student["labels"]["dev"]}
    assert search["kind"] == "distill" and search["source"] == "train" and search["pool_n"] == 16
    assert search["teacher"]["model"] == "large" and search["student"]["options"]["epochs"] == 1
    pool = [json.loads(line)["id"] for line in cache_lines(cache)]
    rows = {r["id"]: r for r in _rows(80, "t")}
    expected = sum(keyword_label(rows[i]["text"]) == rows[i]["label"] for i in pool) / 16
    assert expected < 1.0 and search["teacher_gold_n"] == 16
    assert search["teacher_agreement"] == pytest.approx(expected)

    result = evaluate(adapted, task, splits.test, settings=EvalSettings(latency_sample=0, throughput_sample=0))
    assert result.strategy == "distill" and result.search["pool"] == 16
    assert result.cost["labels"] == cost["labels"]
    saved = adapted.save(tmp_path / "art")
    assert json.loads((saved / "adapted.json").read_text())["kind"] == "distilled"
    loaded = load_adapted(saved)
    assert isinstance(loaded, Distilled) and loaded.strategy == "distill"
    assert [p.pred for p in loaded.predict(splits.test)] == [p.pred for p in preds]
    assert loaded.cost()["search"] == search and loaded.cost()["train"]["seconds"] == train_cost["seconds"]


# -- (b) the cache is shared by seeds and students; larger pools label only what is new ------------------------
def test_cache_shared_across_seeds_students_and_pools(tmp_path):
    task = load_task(write_task(tmp_path / "task"))
    dev = load_splits(task).dev
    teacher, cache = ScriptedLM(SENTIMENT_KEYWORDS), tmp_path / "cache"
    SEEN.clear()
    first = distill().fit(task, [], dev, scripted_ctx(teacher, cache))
    assert teacher.usage.requests == 8
    other = distill(student={"name": "recording_student", "options": {"tag": "b"}})
    second = other.fit(task, [], dev, scripted_ctx(teacher, cache, seed=1))
    assert teacher.usage.requests == 8  # nothing new sent to the teacher
    assert second.cost()["train"]["teacher_cached"] == 8
    assert second.cost()["train"]["api_input_tokens"] == pytest.approx(first.cost()["train"]["api_input_tokens"])
    assert first.search["teacher_label_seconds"] > 0
    assert second.search["teacher_label_seconds"] == pytest.approx(first.search["teacher_label_seconds"])
    assert SEEN[1]["seed"] == 1 and SEEN[0]["labels"] == SEEN[1]["labels"]
    assert not set(SEEN[0]["ids"]) & {ex.id for ex in dev}

    bigger = distill(pool=16).fit(task, [], dev, scripted_ctx(teacher, cache))
    assert teacher.usage.requests == 16 and bigger.search["teacher_cached"] == 8
    assert set(SEEN[0]["ids"]) < set(SEEN[2]["ids"]) and len(cache_lines(cache)) == 16  # pools nest
    assert all(lab == keyword_label(next(r["text"] for r in _rows(80, "t") if r["id"] == i))
               for i, lab in SEEN[2]["labels"].items())  # the student learns the teacher's labels

    # mixed gold: the cell's gold examples join, and win over the teacher's label of the same example
    gold = [ex for ex in load_splits(task).train if ex.id in SEEN[2]["ids"]][:6]
    mixed = distill(pool=16, mix_gold=True).fit(task, gold, dev, scripted_ctx(teacher, cache))
    seen = SEEN[3]
    assert len(seen["ids"]) == len(set(seen["ids"])) == 16
    assert all(seen["labels"][ex.id] == task.label_of(ex) for ex in gold)
    assert any(task.label_of(ex) != SEEN[2]["labels"][ex.id] for ex in gold)  # some gold overrides the teacher
    assert mixed.cost()["labels"] == {"train": 6, "dev": 3} and mixed.search["gold_n"] == 6

    before = teacher.usage.requests
    distill().fit(task, [], dev, scripted_ctx(teacher, None))  # no cache folder: labelled in memory
    assert teacher.usage.requests == before + 8 and len(list(cache.rglob("*.jsonl"))) == 1


def test_unlabeled_source_and_generation_targets(tmp_path):
    task = load_task(write_task(tmp_path / "task", unlabeled=True))
    dev = load_splits(task).dev
    SEEN.clear()
    out = distill(pool=12).fit(task, [], dev, scripted_ctx(ScriptedLM(SENTIMENT_KEYWORDS), None))
    assert out.search["source"] == "unlabeled" and all(i.startswith("u") for i in SEEN[0]["ids"])
    assert out.search["teacher_gold_n"] == 0 and out.search["teacher_agreement"] is None
    assert sum(out.search["label_counts"].values()) == 12
    with pytest.raises(ConfigError) as err:  # a task without unlabeled inputs
        distill(source="unlabeled").fit(load_task(write_task(tmp_path / "plain")), [], dev,
                                        scripted_ctx(ScriptedLM(SENTIMENT_KEYWORDS), None))
    assert err.value.field == "source"

    gen = load_task(write_task(tmp_path / "gen")).model_copy(update={
        "type": "generation", "labels": {}, "label_field": None, "target": "{{ label }}", "metric": "exact_match"})
    lm = ScriptedLM(SENTIMENT_KEYWORDS, generations={"good": " 1", "great": " 1", "bad": " 0"})
    out = distill(pool=10).fit(gen, [], dev, scripted_ctx(lm, None))
    texts = SEEN[1]["labels"]
    gold = {r["id"]: r["label"] for r in _rows(80, "t")}
    assert set(texts.values()) <= {"1", "0", "?"} and out.search["agreement_metric"] == "exact_match"
    assert out.search["teacher_agreement"] == pytest.approx(
        compute("exact_match", list(texts.values()), [gold[i] for i in texts]))
    with pytest.raises(ConfigError) as err:
        distill().fit(gen.model_copy(update={"target": "{{ label }} ({{ text }})"}), [], dev, scripted_ctx(lm, None))
    assert err.value.field == "target"


# -- (c) a labelling killed mid-way resumes from the cache -------------------------------------------------------
KILLED = """\
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from fakes import SENTIMENT_KEYWORDS, ScriptedLM
from adaptlab.data import load_splits, load_task
from adaptlab.strategies import FitContext, ModelPool, get_strategy

class Slow(ScriptedLM):
    def loglikelihood(self, requests, **kw):
        time.sleep(0.5)
        return super().loglikelihood(requests, **kw)

task = load_task(sys.argv[1])
cfg = get_strategy("distill").parse({{"teacher": {{"name": "zero_shot", "model": "large"}},
                                     "student": {{"name": "lora"}}, "pool": 64}})
pool = ModelPool(lms={{"large": Slow(SENTIMENT_KEYWORDS), "default": Slow(SENTIMENT_KEYWORDS)}})
cfg.fit(task, [], load_splits(task).dev, FitContext(models=pool, cache_dir=Path(sys.argv[2])))
"""


def test_labelling_killed_mid_way_resumes(tmp_path):
    task_file = write_task(tmp_path / "task")
    cache = tmp_path / "cache"
    script = tmp_path / "label.py"
    script.write_text(KILLED.format(tests=str(Path(__file__).parent)), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(task_file), str(cache)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            files = list((cache / "teacher").glob("*.jsonl")) if (cache / "teacher").is_dir() else []
            if files and files[0].read_bytes().count(b"\n") >= 16:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    done = cache_lines(cache)
    assert 16 <= len(done) < 64 and len(done) % 16 == 0  # whole batches only
    path = next((cache / "teacher").glob("*.jsonl"))
    with open(path, "ab") as f:
        f.write(b'{"id": "t1", "lab')  # a write torn by the kill

    teacher = ScriptedLM(SENTIMENT_KEYWORDS)
    out = distill(pool=64).fit(load_task(task_file), [], load_splits(load_task(task_file)).dev,
                               scripted_ctx(teacher, cache))
    assert teacher.usage.requests == 64 - len(done)
    assert out.search["teacher_cached"] == len(done) and out.search["teacher_labelled"] == 64 - len(done)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # torn line gone
    assert len(records) == 64 and len({r["id"] for r in records}) == 64
    assert out.cost()["train"]["api_input_tokens"] == pytest.approx(sum(r["input_tokens"] for r in records))


# -- (d) configuration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, field", [
    ({"teacher": {"name": "lora"}}, "teacher.name"),
    ({"student": {"name": "few_shot"}}, "student.name"),
    ({"student": {"name": "distill", "options": {"teacher": {"name": "zero_shot"},
                                                 "student": {"name": "lora"}, "pool": 4}}}, "student.name"),
    ({"pool": 0}, "pool"),
    ({"teacher": {"name": "few_shot", "options": {"kk": 2}}}, "teacher.options.kk"),
])
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ConfigError) as err:
        distill(**options)
    assert err.value.field == field and "\n" not in str(err.value)


def test_label_use_and_roles():
    few = {"name": "few_shot", "model": "large", "options": {"k": 4}}
    assert distill(teacher=few).label_use().mode == "first_k" and distill(teacher=few).label_use().k == 4
    mixed = distill(teacher=few, mix_gold=True).label_use()
    assert (mixed.mode, mixed.k) == ("train_sizes", 4)
    assert distill(mix_gold=True).label_use().k == 0
    assert distill(student={"name": "lora", "model": "small"}).roles() == {"large", "small"}
    own = distill(student={"name": "lora", "options": {"epochs": 2}}, epochs=5)
    assert own.student_config.epochs == 2  # the student's own options are not overridden
    assert distill(student={"name": "lora"}, epochs=5).student_config.epochs == 5


def test_unlabeled_rows_need_the_input_fields(tmp_path):
    from adaptlab.data.splits import load_unlabeled

    task = load_task(write_task(tmp_path / "task", unlabeled=True))
    assert len(load_unlabeled(task)) == 20 and task.data.unlabeled is not None
    (tmp_path / "task" / "unlabeled.jsonl").write_text('{"words": "good"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="'text'"):
        load_unlabeled(task)
