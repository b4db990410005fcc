"""The report of a compare run: ``build_report(run_dir)`` reads the run's store, runs the analysis and
the recommendation, and writes

* ``RUN_DIR/report.html``: one self-contained page (plotly.js inlined once, works offline),
* ``RUN_DIR/summary.md``: the findings as Markdown,
* ``RUN_DIR/results.json``: analysis, recommendation, cells, scenario and environment as JSON,
* ``RUN_DIR/best/``: the recommended cell's artifact (``adaptlab predict RUN_DIR/best`` loads it),
  with a note (``README.md``, or ``BEST.md`` beside a fine-tune's model card) saying what it is.

Modules: `data` (read + compute), `table` (formatting, comparison table), `charts` (plotly
figures), `html` (the page), `summary` (Markdown).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError

if TYPE_CHECKING:
    from adaptlab.report.data import ReportData
    from adaptlab.results import CellRecord, Scenario

log = logging.getLogger(__name__)

__all__ = ["ReportPaths", "build_report", "default_scenario"]

HTML_FILE = "report.html"
SUMMARY_FILE = "summary.md"
RESULTS_FILE = "results.json"
BEST_DIR = "best"
RESULTS_SCHEMA = "adaptlab.results/1"


@dataclass
class ReportPaths:
    html: Path
    summary_md: Path
    results_json: Path
    best_dir: Path | None
    """None when no finished cell has an artifact to copy."""


def default_scenario(run_dir: str | Path) -> "Scenario":
    """The scenario stored with the run's experiment (what `build_report` uses by default)."""
    from adaptlab.report.data import default_scenario as from_experiment
    from adaptlab.experiment.store import RunStore

    store = RunStore(run_dir, create=False)
    try:
        return from_experiment(store.experiment())
    finally:
        store.close()


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AdaptlabError(f"cannot write the report: {exc.strerror}", file=path) from exc


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN/inf -> None, dataclasses and records via to_dict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return _clean(obj.to_dict())
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return str(obj)


def results_doc(data: "ReportData") -> dict[str, Any]:
    """The content of results.json."""
    import adaptlab

    best_cell, why = data.best_cell()
    doc = {
        "schema": RESULTS_SCHEMA,
        "adaptlab_version": getattr(adaptlab, "__version__", None),
        "title": data.title,
        "scenario": data.scenario.to_dict(),
        "recommendation": data.recommendation.to_dict() if data.recommendation else None,
        "analysis": data.analysis.to_dict() if data.analysis else None,
        "best": ({"cell_key": best_cell.key, "variant": best_cell.variant, "why": why,
                  "source": best_cell.artifact_dir} if best_cell is not None else None),
        "problem": data.problem,
        "cells": [c.to_dict() for c in data.cells],
        "experiment": data.experiment,
        "environment": data.environment,
    }
    return _clean(doc)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (artifacts are written once; saves copying GBs of weights), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _best_note(data: "ReportData", cell: "CellRecord", why: str) -> str:
    rec = data.recommendation
    lines = [f"# best/: {cell.variant}", "",
             f"This folder is a copy of `{cell.artifact_dir}`, the artifact of cell `{cell.key[:12]}` "
             f"({cell.strategy}, {cell.n_train} labels, seed {cell.seed}): {why}.",
             f"It scored {cell.metric} {cell.value:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}] on the run's "
             "test examples.", ""]
    if rec is not None:
        lines += [f"Recommendation ({rec.decision}): {rec.headline}", ""]
        if rec.decision == "collect_labels":
            need = f" (about {rec.labels_needed} in all)" if rec.labels_needed else ""
            lines += ["The recommendation is to collect more labels" + need + ": this is the best option "
                      "available meanwhile, not the one to settle on.", ""]
    lines += ["Use it: `adaptlab predict best --text \"...\"` (from the run folder).",
              "This folder is rebuilt by `adaptlab report RUN_DIR`; do not edit it in place.", ""]
    return "\n".join(lines)


def copy_best(data: "ReportData") -> Path | None:
    """Replace RUN_DIR/best/ with the chosen cell's artifact (built aside, then renamed in)."""
    cell, why = data.best_cell()
    if cell is None or not cell.artifact_dir:
        log.warning("no artifact to copy to %s/: %s", BEST_DIR, why)
        return None
    run_dir = data.run_dir
    src = (run_dir / cell.artifact_dir).resolve()
    if not (src / "adapted.json").is_file():
        log.warning("artifact of cell %s is missing (%s); %s/ not written", cell.key[:12], src, BEST_DIR)
        return None
    best = run_dir / BEST_DIR
    tmp = run_dir / f".{BEST_DIR}.tmp-{os.getpid()}"
    old = run_dir / f".{BEST_DIR}.old-{os.getpid()}"
    try:
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
        note = "BEST.md" if (tmp / "README.md").exists() else "README.md"
        (tmp / note).write_text(_best_note(data, cell, why), encoding="utf-8")
        if best.is_symlink() or best.is_file():
            best.unlink()
        elif best.exists():
            best.rename(old)
        tmp.rename(best)
        if old.exists():
            shutil.rmtree(old)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not best.exists():
            old.rename(best)
        raise AdaptlabError(f"cannot write {BEST_DIR}/: {exc.strerror or exc}", file=best) from exc
    return best


def build_report(run_dir: str | Path, scenario: "Scenario | None" = None) -> ReportPaths:
    """Write report.html, summary.md, results.json and best/ into ``run_dir`` (see module doc).

    ``scenario`` defaults to the one stored with the run's experiment.
    """
    from adaptlab.report.data import load_report_data
    from adaptlab.report.html import render_html
    from adaptlab.report.summary import render_summary

    run_dir = Path(run_dir)
    data = load_report_data(run_dir, scenario)
    paths = ReportPaths(run_dir / HTML_FILE, run_dir / SUMMARY_FILE, run_dir / RESULTS_FILE, None)
    _write_text(paths.results_json, json.dumps(results_doc(data), indent=2, ensure_ascii=False,
                                               allow_nan=False) + "\n")
    _write_text(paths.summary_md, render_summary(data))
    _write_text(paths.html, render_html(data))
    paths.best_dir = copy_best(data)
    log.info("report written to %s", paths.html)
    return paths
