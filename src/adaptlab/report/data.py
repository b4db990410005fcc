"""Everything the report shows, read once from a run's store: cells, analysis, recommendation,
per-variant summaries, the comparison table, representative cells and their sample errors."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptlab.errors import AdaptlabError, DataError
from adaptlab.report.charts import color_map
from adaptlab.report.table import (TableRow, VariantPoint, best_points, comparison_table,
                                   variant_points)
from adaptlab.results import CellRecord, PredictionRow, Scenario

if TYPE_CHECKING:
    from adaptlab.analysis import Analysis, Best
    from adaptlab.recommend import Recommendation

log = logging.getLogger(__name__)

N_ERRORS = 5
"""Sample errors shown per representative cell."""


@dataclass
class Representative:
    """The cell the report details for one family's best variant (its highest-scoring seed)."""

    title: str
    family: str
    cell: CellRecord
    errors: list[PredictionRow]
    n_wrong: int
    n_total: int


@dataclass
class ReportData:
    run_dir: Path
    title: str
    experiment: dict[str, Any]
    environment: dict[str, Any]
    timestamps: tuple[str, str] | None
    scenario: Scenario
    cells: list[CellRecord]
    analysis: "Analysis | None"
    recommendation: "Recommendation | None"
    points: list[VariantPoint]
    columns: list[VariantPoint]
    table: list[TableRow]
    colors: dict[str, str]
    representatives: list[Representative] = field(default_factory=list)
    problem: str | None = None
    """Why there is no analysis/recommendation (e.g. every cell failed)."""

    @property
    def failed(self) -> list[CellRecord]:
        return [c for c in self.cells if not c.ok]

    @property
    def ok_cells(self) -> list[CellRecord]:
        return [c for c in self.cells if c.ok]

    @property
    def metric(self) -> str:
        ok = self.ok_cells
        return ok[0].metric if ok else "metric"

    def cell(self, key: str | None) -> CellRecord | None:
        return next((c for c in self.cells if c.key == key), None)

    def best_cell(self) -> tuple[CellRecord | None, str]:
        """The cell whose artifact goes to best/ and why: the recommended one, else the best available."""
        rec = self.recommendation
        chosen = self.cell(rec.cell_key) if rec is not None else None
        if chosen is not None and chosen.artifact_dir:
            why = ("recommended" if rec.decision != "collect_labels"
                   else "best available while you collect labels")
            return chosen, why
        a = self.analysis
        options = [b for b in ((a.best_prompt, a.best_finetune) if a else ()) if b is not None]
        for best in sorted(options, key=lambda b: -b.mean):
            with_artifact = [c for c in best.cells if c.artifact_dir]
            if with_artifact:
                return max(with_artifact, key=lambda c: c.value), "best available (no recommended artifact)"
        return None, "no cell with an artifact"


def default_scenario(experiment: dict[str, Any] | None) -> Scenario:
    """The scenario stored with the experiment (defaults for missing fields)."""
    raw = (experiment or {}).get("scenario") or {}
    return Scenario.from_stored(raw)


def _representative(title: str, best: "Best", predictions: Any) -> Representative:
    cell = max(best.cells, key=lambda c: c.value)
    rows: list[PredictionRow] = predictions(cell.key)
    wrong = [r for r in rows if not (isinstance(r.score, float) and math.isnan(r.score)) and r.score < 1.0]
    wrong.sort(key=lambda r: r.score)
    return Representative(title, best.family, cell, wrong[:N_ERRORS], len(wrong), len(rows))


def load_report_data(run_dir: str | Path, scenario: Scenario | None = None) -> ReportData:
    """Read the run's store and compute the analysis and recommendation the report draws."""
    from adaptlab.analysis import analyze
    from adaptlab.recommend import recommend
    from adaptlab.experiment.store import RunStore

    run_dir = Path(run_dir)
    store = RunStore(run_dir, create=False)
    try:
        experiment = store.experiment()
        if experiment is None:
            raise AdaptlabError("the run has no experiment recorded", file=run_dir,
                                hint="run `adaptlab compare EXP.yaml --out DIR` first")
        environment = store.environment() or {}
        timestamps = store.timestamps() if hasattr(store, "timestamps") else None
        scenario = scenario if scenario is not None else default_scenario(experiment)
        cells = [c.served(scenario) for c in store.cells()]
        analysis = recommendation = None
        problem = None
        if any(c.ok for c in cells):
            analysis = analyze(cells, store.predictions, scenario)
            try:
                recommendation = recommend(analysis, scenario)
            except DataError as exc:
                problem = exc.one_line()
        else:
            problem = ("no cell finished" + (f": all {len(cells)} failed" if cells else " yet")
                       + "; see the failed cells below")
        reps = []
        if analysis is not None:
            for title, best in (("Best prompt", analysis.best_prompt),
                                ("Best fine-tune", analysis.best_finetune)):
                if best is not None:
                    reps.append(_representative(title, best, store.predictions))
    finally:
        store.close()
    points = variant_points(cells, scenario, analysis.interval if analysis is not None else None)
    columns = best_points(points)
    return ReportData(
        run_dir=run_dir, title=str(experiment.get("name") or run_dir.name), experiment=experiment,
        environment=environment, timestamps=timestamps, scenario=scenario, cells=cells,
        analysis=analysis, recommendation=recommendation, points=points, columns=columns,
        table=comparison_table(columns, scenario),
        colors=color_map([(c.variant, c.family) for c in cells]),
        representatives=reps, problem=problem)
