"""Executors: how a compare run gets its cells computed (``executor:`` in the experiment, ``--executor``).

* ``local`` runs the cells one after another in this process, sharing one prompt LM.
* ``ray`` runs each cell as a Ray task (``num_cpus=cpus_per_cell``, ``num_gpus=gpus_per_cell``), at
  most ``workers`` at once, on a local cluster it starts (``workers x cpus_per_cell`` CPUs) or on an
  existing one (``address``). A worker process builds what cells need once per run (the prompt LM,
  embedders, training orders) and keeps it for the next cell it gets; it writes the cell's artifact
  folder ``RUN_DIR/cells/<key[:12]>/`` itself, so workers on other machines need RUN_DIR on a
  shared file system at the same path. Results come back to the driver, which alone writes the
  store (one SQLite writer), each the moment it arrives.

Either way a cell runs through `execution.run_cell`, so its record, predictions and artifact do not
depend on the executor (the executor is no part of a cell key). Stopping (SIGINT/SIGTERM) works the
same: no new cell starts, cells in flight are cancelled (Ray: their workers are killed), a store
write in progress is finished and the run raises `RunInterrupted`; ``--resume`` re-runs what is missing.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import site
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from adaptlab.errors import AdaptlabError, ConfigError, closest
from adaptlab.experiment.cells import CellInputs, cell_dir, failed_record
from adaptlab.experiment.config import EXECUTORS, ExecutorConfig, ExperimentConfig
from adaptlab.experiment.execution import CellOutcome, RunResources, now, run_cell
from adaptlab.experiment.grid import Cell
from adaptlab.experiment.signals import RunSignals

log = logging.getLogger(__name__)

RAY_HINT = "pip install 'adaptlab[ray]'"
WAIT_S = 0.5
"""How long the Ray driver blocks waiting for a result before it looks at signals again."""
_ENV_PREFIXES = ("ADAPTLAB_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")
"""Environment variables a Ray worker gets from the driver (caches, offline mode, verbosity)."""

OnStart = Callable[[Cell], None]
OnDone = Callable[[CellOutcome], None]


class Executor(Protocol):
    """Runs ``cells`` and hands each finished one to ``on_done`` (the runner's store write), in the
    driver process. Raises the runner's stop exception when ``sig`` catches SIGINT/SIGTERM."""

    def run(self, cfg: ExperimentConfig, inputs: CellInputs, cells: Sequence[Cell], run_dir: Path,
            sig: RunSignals, *, on_start: OnStart, on_done: OnDone) -> None: ...


class LocalExecutor:
    """One cell after another in this process (the prompt LM is loaded once and shared)."""

    def run(self, cfg: ExperimentConfig, inputs: CellInputs, cells: Sequence[Cell], run_dir: Path,
            sig: RunSignals, *, on_start: OnStart, on_done: OnDone) -> None:
        res = RunResources(cfg, inputs)
        for cell in cells:
            sig.check()
            on_start(cell)
            on_done(run_cell(cell, res, run_dir))


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs ray", hint=RAY_HINT) from None
    return ray


def get_executor(config: ExecutorConfig) -> Executor:
    """The executor ``config`` names (``ray`` is imported here, so a missing install fails early)."""
    if config.kind == "ray":
        import_ray()
        return RayExecutor(config)
    return LocalExecutor()


def executor_config(base: ExecutorConfig, *, kind: str | None = None, workers: int | None = None,
                    address: str | None = None) -> ExecutorConfig:
    """``base`` with command-line overrides, validated (``--workers``/``--ray-address`` need ray)."""
    update = {k: v for k, v in (("kind", kind), ("workers", workers), ("address", address)) if v is not None}
    if not update:
        return base
    if kind is not None and kind not in EXECUTORS:
        guess = closest(kind, EXECUTORS)
        raise ConfigError(f"unknown executor '{kind}'", field="--executor",
                          hint=f"did you mean '{guess}'?" if guess else "use local or ray")
    data = {**base.model_dump(), **update}
    if data["kind"] != "ray" and (workers is not None or address is not None):
        flag = "--workers" if workers is not None else "--ray-address"
        raise ConfigError(f"{flag} applies to the ray executor only", field=flag,
                          hint="add --executor ray, or set executor: {kind: ray} in the experiment")
    try:
        return ExecutorConfig(**data)
    except ConfigError as exc:
        flag = {"kind": "--executor", "workers": "--workers", "address": "--ray-address"}.get(exc.field or "", exc.field)
        raise ConfigError(exc.message, field=flag, hint=exc.hint) from None


# -- ray ------------------------------------------------------------------------------------------

_WORKER: tuple[str, RunResources] | None = None
"""A Ray worker process's resources for the run it last served (run id, resources): the prompt LM,
embedders and training orders are built once per worker and reused by the next cell of that run."""


def _ray_cell(shared: tuple[ExperimentConfig, CellInputs], cell: Cell, run_dir: str, run_id: str) -> CellOutcome:
    """The Ray task: run one cell in this worker process and return its outcome (no store access)."""
    global _WORKER
    cfg, inputs = shared
    if _WORKER is None or _WORKER[0] != run_id:
        _WORKER = None  # drop the previous run's LM before loading this one's
        _WORKER = (run_id, RunResources(cfg, inputs))
    out = run_cell(cell, _WORKER[1], Path(run_dir))
    out.record.extra["worker_pid"] = os.getpid()
    try:
        import ray

        out.record.extra["worker_node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - where it ran is informative only
        pass
    return out


def _package_root() -> str | None:
    """The folder that holds the ``adaptlab`` package when it is not in site-packages (a src checkout)."""
    import adaptlab

    root = Path(adaptlab.__file__).resolve().parents[1]
    installed = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    return None if root in installed else str(root)


def worker_env(config: ExecutorConfig) -> dict[str, str]:
    """Environment variables of the Ray workers: thread count, HF/adaptlab settings, the source path."""
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    env["OMP_NUM_THREADS"] = str(max(1, int(config.cpus_per_cell)))
    root = _package_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


def _error_of(exc: BaseException) -> BaseException:
    """The user-facing error of a failed Ray task (a task error wraps the cell's own exception)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayExecutor:
    """Cells as Ray tasks; the driver (this process) collects results and alone writes the store."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def _connect(self, ray: Any, sig: RunSignals) -> None:
        """Start a local cluster or join ``address``."""
        c = self.config
        kwargs: dict[str, Any] = {"address": c.address, "log_to_driver": False, "ignore_reinit_error": True,
                                  "runtime_env": {"env_vars": worker_env(c)},
                                  # Ray's own driver-side notices only with --verbose; cells report for themselves
                                  "logging_level": logging.ERROR if log.getEffectiveLevel() > logging.INFO
                                  else logging.INFO}
        if c.address is None:
            kwargs.update(num_cpus=math.ceil(c.workers * c.cpus_per_cell), include_dashboard=False)
        with sig.critical():  # a stop during start-up is taken once the cluster is up (and shut down)
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {c.address}: {exc}", field="executor.address",
                                  hint="start it with `ray start --head`, or drop the address for a local one")
            finally:
                sig.reinstall()  # ray.init installs its own SIGTERM handler

    def _check_resources(self, ray: Any, cfg: ExperimentConfig, local: bool) -> None:
        """A local cluster that cannot fit one cell is an error (Ray would wait forever); a remote one may grow."""
        total = ray.cluster_resources()
        c = self.config
        for name, need in (("CPU", c.cpus_per_cell), ("GPU", c.gpus_per_cell)):
            have = float(total.get(name, 0.0))
            if need > have:
                text = f"a cell needs {need:g} {name}s but the Ray cluster has {have:g}"
                if local:
                    key = f"{name.lower()}s_per_cell"
                    raise ConfigError(text, file=cfg.file, line=cfg.line_of("executor", key), field=f"executor.{key}",
                                      hint="lower it, or join a cluster that has them with --ray-address")
                log.warning("%s; cells wait until the cluster grows", text)

    def run(self, cfg: ExperimentConfig, inputs: CellInputs, cells: Sequence[Cell], run_dir: Path,
            sig: RunSignals, *, on_start: OnStart, on_done: OnDone) -> None:
        if not cells:
            return
        ray = import_ray()
        owned = not ray.is_initialized()  # else: a session the caller started (and will shut down)
        try:
            if owned:
                self._connect(ray, sig)
            self._check_resources(ray, cfg, local=owned and self.config.address is None)
            self._loop(ray, cfg, inputs, cells, run_dir, sig, on_start, on_done)
        finally:
            if owned and ray.is_initialized():
                ray.shutdown()

    def _loop(self, ray: Any, cfg: ExperimentConfig, inputs: CellInputs, cells: Sequence[Cell], run_dir: Path,
              sig: RunSignals, on_start: OnStart, on_done: OnDone) -> None:
        c = self.config
        # max_calls=0: a worker serves any number of cells, so its LM cache lives on (Ray would
        # otherwise start a fresh process for every GPU task); max_retries=0: a crash is a failed cell
        task = ray.remote(num_cpus=c.cpus_per_cell, num_gpus=c.gpus_per_cell, max_retries=0,
                          max_calls=0)(_ray_cell).options(name="adaptlab-cell")
        shared = ray.put((cfg, inputs))
        run_id, folder = uuid.uuid4().hex, str(Path(run_dir).resolve())
        queue = deque(cells)
        pending: dict[Any, tuple[Cell, str, float]] = {}
        try:
            while queue or pending:
                sig.check()
                # Ray's calls must not be cut by the stop (its C++ core would swallow the exception, and
                # a half-submitted task would escape the cancel): a signal is held until the results at
                # hand are written (at most WAIT_S later), then raised.
                with sig.critical():
                    while queue and len(pending) < c.workers:
                        cell = queue.popleft()
                        on_start(cell)
                        pending[task.remote(shared, cell, folder, run_id)] = (cell, now(), time.perf_counter())
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                    for ref in ready:
                        on_done(self._outcome(ray, ref, *pending.pop(ref), inputs, run_dir))
        except BaseException:
            if pending:
                log.info("cancelling %d cells in flight", len(pending))
                for ref in pending:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception as exc:  # noqa: BLE001 - best effort; shutdown ends them too
                        log.debug("cancel failed: %s", exc)
            raise

    @staticmethod
    def _outcome(ray: Any, ref: Any, cell: Cell, started: str, t0: float, inputs: CellInputs,
                 run_dir: Path) -> CellOutcome:
        """The task's outcome, or a failed record when the task itself failed (worker died, ...)."""
        try:
            return ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a failed cell is recorded and the run goes on
            error = _error_of(exc)
            if isinstance(error, AdaptlabError):  # run_cell raises only what stops the run (disk full)
                raise error from None
            rec = failed_record(cell, error, inputs.task.metric)
            log.warning("cell %s failed in its Ray worker: %s", cell.describe(), rec.error)
            shutil.rmtree(cell_dir(run_dir, cell), ignore_errors=True)
            return CellOutcome(cell, rec, [], None, started, time.perf_counter() - t0)


__all__ = ["Executor", "LocalExecutor", "RayExecutor", "get_executor", "executor_config", "import_ray",
           "worker_env", "RAY_HINT"]
