"""Compare experiments: the config and its grid (`config`, `entries`, `grid`), one cell path (`cells`), running a
grid (`runner`, `executors`, `execution`), the run store (`store`), plugins, and one-off runs (`single`).
``adaptlab compare EXP.yaml --out RUN_DIR`` and ``adaptlab demo`` use these."""

from adaptlab.experiment.config import ExecutorConfig, ExperimentConfig, builtin_experiment, load_experiment
from adaptlab.experiment.entries import StrategyEntry
from adaptlab.experiment.grid import Cell, cell_key, expand_cells
from adaptlab.experiment.runner import RunOptions, SummaryRow, prepare, run_experiment, summarize
from adaptlab.experiment.signals import RunInterrupted

__all__ = ["Cell", "ExecutorConfig", "ExperimentConfig", "RunInterrupted", "RunOptions", "StrategyEntry", "SummaryRow",
           "builtin_experiment", "cell_key", "expand_cells", "load_experiment", "prepare", "run_experiment",
           "summarize"]
