"""Resumable training checkpoints, written atomically and without pickle.

A checkpoint is a folder ``<root>/step-000042/`` holding

* ``trainable.safetensors``  the trainable parameters (adapter, soft prompt or all weights),
* ``optimizer.safetensors`` + ``optimizer.json``  optimizer tensors and its scalar state,
* ``rng-<rank>.safetensors`` + ``rng-<rank>.json``  every process's torch/numpy/python RNG state,
* ``state.json``  scheduler state, step, epoch, batch position, best score, cost counters.

It is first written to ``<root>/.tmp-step-000042`` and renamed into place only when complete, so a
run killed at any moment (even SIGKILL) leaves either the previous checkpoint or the new one, never
a half-written one. Optimizer state is flattened into safetensors + JSON (no ``torch.save``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.safetensors"


# ----------------------------------------------------------------------------- trainable weights
def trainable_state(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """The parameters that receive gradients, detached and contiguous on CPU."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: "torch.nn.Module", tensors: dict[str, "torch.Tensor"]) -> None:
    """Copy saved trainable parameters back into ``model`` (names must match exactly)."""
    import torch

    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in tensors]
    unknown = [n for n in tensors if n not in params]
    if missing or unknown:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:3]}, unexpected {unknown[:3]}")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def save_trainable(model: "torch.nn.Module", path: Path) -> None:
    from safetensors.torch import save_file

    save_file(trainable_state(model), str(path))


def read_trainable(path: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ----------------------------------------------------------------------------- optimizer
def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, "torch.Tensor"], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """torch (CPU + CUDA), numpy and python RNG states as tensors + JSON."""
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": _to_json(random.getstate()),
            "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def set_rng_state(tensors: dict[str, "torch.Tensor"], meta: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(_to_tuple(meta["python"]))


def _to_json(value: Any) -> Any:
    return [_to_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------- folders
def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temp folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_RE.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def save_checkpoint(root: Path, step: int, *, model: "torch.nn.Module", optimizer: Any,
                    scheduler: Any, state: dict[str, Any], accelerator: Any,
                    keep: int = 1) -> Path | None:
    """Write checkpoint ``step`` atomically; every process must call it (collective).

    The main process writes weights, optimizer and state; each process writes its own RNG state.
    Returns the final folder (None on non-main processes).
    """
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:06d}"
    final = checkpoint_dir(root, step)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    rng_t, rng_m = rng_state()
    save_file(rng_t, str(tmp / f"rng-{rank}.safetensors"))
    _write_json(tmp / f"rng-{rank}.json", rng_m)
    if accelerator.is_main_process:
        save_trainable(accelerator.unwrap_model(model), tmp / TRAINABLE_FILE)
        opt_t, opt_m = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "optimizer.json", opt_m)
        _write_json(tmp / STATE_FILE, {**state, "step": step, "num_processes": accelerator.num_processes,
                                       "scheduler": scheduler.state_dict()})
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return None
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, *, model: "torch.nn.Module", optimizer: Any, scheduler: Any,
                    accelerator: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; returns the saved state."""
    from safetensors.torch import load_file

    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if state.get("num_processes", 1) != accelerator.num_processes:
        raise RuntimeError(f"checkpoint {path} was written by {state.get('num_processes')} processes, "
                           f"this run has {accelerator.num_processes}")
    load_trainable(accelerator.unwrap_model(model), read_trainable(path / TRAINABLE_FILE))
    opt = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                               json.loads((path / "optimizer.json").read_text(encoding="utf-8")))
    optimizer.load_state_dict(opt)
    scheduler.load_state_dict(state.pop("scheduler"))
    rank = accelerator.process_index
    set_rng_state(load_file(str(path / f"rng-{rank}.safetensors")),
                  json.loads((path / f"rng-{rank}.json").read_text(encoding="utf-8")))
    return state


def _fsync_dir(path: Path) -> None:
    """Flush a folder's files and entry to disk (best effort)."""
    try:
        for p in path.iterdir() if path.is_dir() else []:
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - filesystems without directory fsync
        pass
