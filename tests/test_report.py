"""The report of a compare run: files, JSON, Markdown, best/ and escaping of dataset text.

The run directory is built through the real `RunStore` from hand-made cells whose predictions are
generated (seeded) to match their values; every cell's artifact is a copy of a real prompt artifact
made by `run_single` with the tiny model, so best/ is loadable by `adaptlab predict`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adaptlab.results import CellRecord, PredictionRow, Scenario

NASTY_INPUT = "refund please <script>alert(1)</script> and <b>x</b> then </script> end"
NASTY_LABEL = "<b>x</b>"
NASTY_VARIANT = "few_shot k=8 <script>alert(1)</script>"
NASTY_ERROR = "CUDA out of memory </script><script>alert(1)</script>"
N_TEST = 40
SCENARIO = {"queries_per_month": 100_000.0, "price_per_hour": 0.10, "months": 12.0}


def prompt_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real prompt artifact (zero-shot, tiny model), made once per test session."""
    path = tmp_path_factory.getbasetemp() / "report-prompt-artifact"
    if not (path / "adapted.json").is_file():
        from adaptlab.data import builtin_task
        from adaptlab.experiment.single import SingleRun, run_single
        from adaptlab.lm.factory import build_lm
        from adaptlab.strategies import ModelPool

        run_single(builtin_task("demo"), "zero_shot", {}, ModelPool.of(build_lm("tiny-random-llama")),
                   SingleRun(out_dir=path, limit=10, progress=False, latency_sample=2))
    return path


def own_artifact(artifact: Path, folder: Path, key: str) -> None:
    """A copy of ``artifact`` in ``folder`` that is this cell's own: its instruction names the cell, so no two
    cells' adapted.json are alike (a best/ that copied the wrong cell would not compare equal)."""
    shutil.copytree(artifact, folder)
    path = folder / "adapted.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["format"]["instruction"] = f"{doc['format']['instruction']} (cell {key[:12]})".strip()
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")


def _labels() -> list[str]:
    from adaptlab.data import builtin_task

    return builtin_task("demo").label_keys + [NASTY_LABEL]


def _predictions(key: str, value: float, seed: int, labels: list[str]) -> list[PredictionRow]:
    """N_TEST rows with round(value * N_TEST) correct; the first three (nasty text) always wrong."""
    rng = random.Random(f"{key}-{seed}")
    n_correct = round(value * N_TEST)
    order = list(range(3, N_TEST))
    rng.shuffle(order)
    correct = set(order[:n_correct])
    rows = []
    for i in range(N_TEST):
        gold = labels[i % len(labels)]
        pred = gold if i in correct else labels[(i + 1 + rng.randrange(len(labels) - 1)) % len(labels)]
        text = NASTY_INPUT if i < 3 else f"customer message number {i} about {gold}"
        rows.append(PredictionRow(key, f"ex-{i:03d}", text, gold, pred, float(pred == gold)))
    return rows


# (variant, strategy, n_train, seeds -> value); fine-tunes cross the best prompt (~0.72) near n=64.
GRID = [
    ("zero_shot", "zero_shot", 0, {0: 0.55}),
    (NASTY_VARIANT, "few_shot", 8, {0: 0.70, 1: 0.725, 2: 0.75}),
    ("lora r=8", "lora", 16, {0: 0.60, 1: 0.625, 2: 0.65}),
    ("lora r=8", "lora", 64, {0: 0.70, 1: 0.75, 2: 0.775}),
    ("lora r=8", "lora", 256, {0: 0.825, 1: 0.85, 2: 0.875}),
    ("embedding_probe", "embedding_probe", 16, {0: 0.50}),
    ("embedding_probe", "embedding_probe", 256, {0: 0.675}),
]


def make_run(run_dir: Path, artifact: Path, *, fail_all: bool = False,
             strategies: tuple[str, ...] | None = None) -> list[CellRecord]:
    """Write an experiment, its cells (+ one failed cell) and their predictions into ``run_dir``."""
    from adaptlab.metrics import classification_report
    from adaptlab.experiment.store import RunStore

    labels = _labels()
    metrics_doc = json.loads((artifact / "metrics.json").read_text())
    cells = []
    store = RunStore(run_dir)
    try:
        store.save_experiment(
            {"name": "report test <b>x</b>", "task": "builtin:demo", "model": "tiny-random-llama",
             "train_sizes": [16, 64, 256], "seeds": [0, 1, 2], "scenario": SCENARIO,
             "strategies": [{"name": "few_shot", "label": NASTY_VARIANT}]},
            {"python": sys.version.split()[0], "cpu": "test cpu", "logical_cores": 2})
        for variant, strategy, n, seeds in GRID:
            if strategies is not None and strategy not in strategies:
                continue
            prompt = strategy in ("zero_shot", "few_shot")
            for seed, value in seeds.items():
                key = hashlib.sha256(f"{variant}|{n}|{seed}".encode()).hexdigest()
                if fail_all:
                    rec = CellRecord(key, strategy, {}, n, seed, variant, status="failed", error=NASTY_ERROR)
                    store.put_cell(rec, [], None)
                    cells.append(rec)
                    continue
                rows = _predictions(key, value, seed, labels)
                acc = sum(r.score for r in rows) / len(rows)
                rel = f"cells/{key[:12]}"
                own_artifact(artifact, run_dir / rel, key)
                rec = CellRecord(
                    key, strategy, {"k": n} if strategy == "few_shot" else {}, n, seed, variant,
                    value=acc, ci_low=max(0.0, acc - 0.12), ci_high=min(1.0, acc + 0.12), n_test=N_TEST,
                    train_seconds=0.4 if prompt else 30.0 * n / 16, train_flops=0.0 if prompt else 4e12 * n,
                    peak_memory_bytes=600_000_000, trainable_params=0 if prompt else 460_000,
                    artifact_bytes=3_000 if prompt else 1_900_000,
                    query_prompt_tokens=420.0 if strategy == "few_shot" else 60.0,
                    query_flops=1.1e11 if strategy == "few_shot" else 1.6e10,
                    query_seconds=0.09 if strategy == "few_shot" else 0.012 + 0.001 * seed,
                    artifact_dir=rel,
                    report=classification_report([r.gold for r in rows], [r.pred for r in rows], labels))
                store.put_cell(rec, rows, metrics_doc)
                cells.append(rec)
        failed = CellRecord("f" * 64, "lora", {}, 1024, 0, "lora r=8", status="failed", error=NASTY_ERROR)
        store.put_cell(failed, [], None)
        cells.append(failed)
    finally:
        store.close()
    return cells


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from adaptlab.report import build_report

    run_dir = tmp_path_factory.mktemp("report-run")
    cells = make_run(run_dir, prompt_artifact(tmp_path_factory))
    return run_dir, cells, build_report(run_dir)


def _strict_json(path: Path) -> dict:
    def no_constants(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)


def test_writes_all_outputs(built):
    run_dir, cells, paths = built
    assert paths.html == run_dir / "report.html" and paths.html.stat().st_size > 100_000
    assert paths.summary_md.is_file() and paths.results_json.is_file()
    doc = _strict_json(paths.results_json)
    assert {"analysis", "recommendation", "cells", "scenario", "environment"} <= set(doc)
    assert len(doc["cells"]) == len(cells)
    assert doc["scenario"]["queries_per_month"] == SCENARIO["queries_per_month"]
    # LoRA at 256 labels (0.85 over seeds) is 12.5 points above the best prompt (0.725), p ~ 0.04 on 40 examples:
    # the rule picks LoRA, but the pick does not hold in 80% of bootstrap replicates, so the run calls it too close
    # and ships the cheaper of the two (LoRA: 0.012 s per query against 0.09)
    rec = doc["recommendation"]
    assert (rec["decision"], rec["choice"], rec["alternative"]) == ("too_close", "lora r=8", NASTY_VARIANT)
    assert rec["stability"] < 0.8
    assert doc["analysis"]["best_finetune"]["variant"] == "lora r=8"
    assert [f["error"] for f in doc["analysis"]["failed"]] == [NASTY_ERROR]
    assert not list(run_dir.glob(".*.tmp-*")), "temporary files left behind"


def test_summary_states_the_recommendation(built):
    from adaptlab.report.table import md_escape

    paths = built[2]
    rec = _strict_json(paths.results_json)["recommendation"]
    md = paths.summary_md.read_text(encoding="utf-8")
    assert md_escape(rec["headline"]) in md
    assert rec["decision"].replace("_", " ").upper() in md
    assert "## Comparison" in md and "## Break-even" in md and "## Significance" in md
    assert "| **Cost per 1,000 queries** |" in md


def _best_note(best_dir: Path, artifact_dir: Path) -> str:
    """The report's note in best/: README.md, or BEST.md beside the artifact's own model card (every cell's
    folder holds one: README.md), which best/ keeps unchanged."""
    card = artifact_dir / "README.md"
    if card.is_file():
        assert (best_dir / "README.md").read_bytes() == card.read_bytes()
        return (best_dir / "BEST.md").read_text(encoding="utf-8")
    return (best_dir / "README.md").read_text(encoding="utf-8")


def test_best_is_the_recommended_artifact_and_loads(built):
    from adaptlab.strategies import load_adapted

    run_dir, cells, paths = built
    doc = _strict_json(paths.results_json)
    key = doc["recommendation"]["cell_key"]
    cell = next(c for c in cells if c.key == key)
    assert doc["best"]["cell_key"] == key and paths.best_dir == run_dir / "best"
    best = (paths.best_dir / "adapted.json").read_bytes()
    assert best == (run_dir / cell.artifact_dir / "adapted.json").read_bytes()
    others = [c for c in cells if c.artifact_dir and c.key != key]
    assert others and all(best != (run_dir / c.artifact_dir / "adapted.json").read_bytes() for c in others)
    loaded = load_adapted(paths.best_dir)
    assert loaded.kind == "prompt" and f"(cell {key[:12]})" in loaded.fmt.instruction
    note = _best_note(paths.best_dir, run_dir / cell.artifact_dir)
    assert cell.variant in note and key[:12] in note


def test_dataset_text_is_escaped_everywhere(built):
    _, _, paths = built
    page = paths.html.read_text(encoding="utf-8")
    lower = page.lower()
    assert "<script>alert" not in lower and "<b>x</b>" not in lower
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text, in tables
    # every </script> closes a script tag the report opened: plotly.js once + one per chart
    n_charts = page.count('class="plotly-graph-div"')
    assert n_charts >= 6
    assert lower.count("<script") == lower.count("</script>") == 1 + n_charts
    md = paths.summary_md.read_text(encoding="utf-8")
    assert "<script" not in md.lower() and "<b>" not in md.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_plotly_js_inlined_exactly_once_and_no_network(built):
    import plotly.offline

    page = built[2].html.read_text(encoding="utf-8")
    bundle = plotly.offline.get_plotlyjs()
    assert page.count(bundle[:2000]) == 1 and page.count(bundle[-2000:]) == 1
    assert len(page) < 1.5 * len(bundle)
    rest = page.replace(bundle, "")  # the bundle names a topojson CDN default that 2-D charts never use
    for needle in ("src=", "cdn.plot.ly", "<link ", "http://", "https://", "@import"):
        assert needle not in rest


def test_page_content_in_order(built):
    page = built[2].html.read_text(encoding="utf-8")
    anchors = ['id="recommendation"', 'id="comparison"', 'id="chart-curves"', 'id="chart-pareto"',
               'id="chart-cost"', 'id="chart-classes"', 'id="chart-confusion-0"', 'id="chart-confusion-1"',
               'id="chart-sensitivity"', 'id="errors"', 'id="failed"', 'id="reproduce"']
    positions = [page.find(a) for a in anchors]
    assert -1 not in positions, [a for a, p in zip(anchors, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    for row in ("Training required", "Labelled examples used", "Cost per 1,000 queries", "Latency",
                "Changing the task", "accuracy [95% CI]"):
        assert row in page
    assert "matches the best prompt at" in page  # crossover annotation on the learning curves
    assert "break-even" in page.lower()
    assert "&#34;logical_cores&#34;: 2" in page or '"logical_cores": 2' in page


def test_rebuild_replaces_best_and_collect_labels_note(built):
    from adaptlab.report import build_report
    from adaptlab.strategies import load_adapted

    run_dir, _, _ = built
    (run_dir / "best" / "stale.txt").write_text("old")
    paths = build_report(run_dir, Scenario(**SCENARIO, accuracy_target=0.88))
    rec = _strict_json(paths.results_json)["recommendation"]
    assert rec["decision"] == "collect_labels", rec
    assert not (paths.best_dir / "stale.txt").exists()
    assert load_adapted(paths.best_dir).kind == "prompt"
    artifact = run_dir / _strict_json(paths.results_json)["best"]["source"]
    assert (paths.best_dir / "adapted.json").read_bytes() == (artifact / "adapted.json").read_bytes()
    assert "collect more labels" in _best_note(paths.best_dir, artifact)
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".best")]
    build_report(run_dir)  # back to the stored scenario for the other tests


def test_all_cells_failed_still_reports(tmp_path, tmp_path_factory):
    from adaptlab.report import build_report

    make_run(tmp_path, prompt_artifact(tmp_path_factory), fail_all=True)
    paths = build_report(tmp_path)
    assert paths.best_dir is None and not (tmp_path / "best").exists()
    page = paths.html.read_text(encoding="utf-8")
    assert "No recommendation" in page and "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert "<script" not in page.lower()  # no charts, so no scripts at all
    assert _strict_json(paths.results_json)["recommendation"] is None


def test_prompt_only_run(tmp_path, tmp_path_factory):
    from adaptlab.report import build_report

    make_run(tmp_path, prompt_artifact(tmp_path_factory), strategies=("zero_shot", "few_shot"))
    paths = build_report(tmp_path)
    doc = _strict_json(paths.results_json)
    assert doc["recommendation"]["decision"] == "prompt" and doc["analysis"]["break_even"] is None
    page = paths.html.read_text(encoding="utf-8")
    assert 'id="chart-curves"' in page and 'id="chart-cost"' not in page
    assert "needs both a finished prompt and a finished fine-tune" in paths.summary_md.read_text(encoding="utf-8")
    assert (paths.best_dir / "adapted.json").is_file()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "adaptlab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_report_rebuilds_from_the_store(built):
    run_dir, _, paths = built
    paths.html.unlink()
    shutil.rmtree(run_dir / "best")
    proc = _cli("report", str(run_dir), "--queries-per-month", "5000000", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    assert paths.html.is_file() and (run_dir / "best" / "adapted.json").is_file()
    assert _strict_json(paths.results_json)["scenario"]["queries_per_month"] == 5_000_000
    assert "report.html" in proc.stdout
    assert _cli("report", str(run_dir), cwd=run_dir.parent).returncode == 0


def test_cli_report_without_a_run_is_one_line_error(tmp_path):
    proc = _cli("report", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no adaptlab run" in lines[0]
    assert "Traceback" not in proc.stderr


def test_report_shows_format_spread_labels_used_and_cost_assumptions(tmp_path, tmp_path_factory):
    """Prompts in two formats, a fine-tune that read 100 dev labels, a priced label: the page shows the format
    spread (both formats' scores), learning curves over labels used, and the cost assumptions."""
    from adaptlab.analysis import analyze
    from adaptlab.experiment.store import RunStore
    from adaptlab.report import build_report
    from adaptlab.report import charts

    labels = _labels()
    artifact = prompt_artifact(tmp_path_factory)
    metrics_doc = json.loads((artifact / "metrics.json").read_text())
    scenario = {**SCENARIO, "price_per_label": 0.5}
    grid = [("zero_shot format=chat", "zero_shot", {"format": "chat"}, 0, 0, {0: 0.625}),
            ("zero_shot format=plain", "zero_shot", {"format": "plain"}, 0, 0, {0: 0.525}),
            ("lora", "lora", {}, 16, 116, {0: 0.55, 1: 0.575}),
            ("lora", "lora", {}, 64, 164, {0: 0.75, 1: 0.80})]
    cells = []
    store = RunStore(tmp_path)
    try:
        store.save_experiment({"name": "formats", "task": "builtin:demo", "model": "tiny-random-llama",
                               "scenario": scenario, "strategies": []}, {"logical_cores": 2})
        for variant, strategy, options, n, used, seeds in grid:
            for seed, value in seeds.items():
                key = hashlib.sha256(f"{variant}|{n}|{seed}".encode()).hexdigest()
                rows = _predictions(key, value, seed, labels)
                rel = f"cells/{key[:12]}"
                shutil.copytree(artifact, tmp_path / rel)
                rec = CellRecord(key, strategy, options, n, seed, variant, value=sum(r.score for r in rows) / N_TEST,
                                 ci_low=0.4, ci_high=0.9, n_test=N_TEST, train_seconds=30.0 if n else 0.0,
                                 query_seconds=0.05, artifact_dir=rel, labels_used=used)
                store.put_cell(rec, rows, metrics_doc)
                cells.append(rec)
    finally:
        store.close()
    paths = build_report(tmp_path)
    page = paths.html.read_text(encoding="utf-8")
    assert 'id="chart-formats"' in page and "Format spread" in page
    chat, plain = (sum(r.score for r in _predictions(hashlib.sha256(f"zero_shot format={f}|0|0".encode()).hexdigest(),
                                                   v, 0, labels)) / N_TEST for f, v in (("chat", 0.625), ("plain", 0.525)))
    assert f"zero_shot format=chat: {chat:.3f}" in page and f"zero_shot format=plain: {plain:.3f}" in page
    assert 'id="assumptions"' in page and "Labels at $0.50 each" in page
    assert "164 (64 training + 100 read on dev)" in page  # the comparison table counts dev labels
    # the learning curves' x axis is labels used: the lora points sit at 116 and 164, not 16 and 64
    analysis = analyze(cells, lambda key: [], Scenario(**scenario))
    fig = charts.learning_curves(analysis.curves, charts.color_map([(c.variant, c.family) for c in cells]),
                                 "accuracy")
    lora = [t for t in fig.data if t.name == "lora" and t.mode == "lines+markers"]
    assert list(lora[0].x) == [116.0, 164.0]
    assert fig.layout.xaxis.title.text.startswith("labels used")
