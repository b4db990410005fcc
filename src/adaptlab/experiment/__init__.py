"""Compare experiments: the config and its grid (`config`, `grid`), running cells (`cells`) and the
run itself (`runner`). ``adaptlab compare EXP.yaml --out RUN_DIR`` and ``adaptlab demo`` use these.

Heavy modules load lazily: importing this package only loads the config layer.
"""

from __future__ import annotations

from typing import Any

from adaptlab.experiment.config import ExperimentConfig, StrategyEntry, builtin_experiment, load_experiment
from adaptlab.experiment.grid import Cell, cell_key, expand_cells

__all__ = ["ExperimentConfig", "StrategyEntry", "load_experiment", "builtin_experiment", "Cell", "cell_key",
           "expand_cells", "run_experiment", "RunInterrupted", "summarize", "SummaryRow"]


def __getattr__(name: str) -> Any:
    if name in ("run_experiment", "RunInterrupted", "summarize", "SummaryRow", "prepare"):
        from adaptlab.experiment import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
