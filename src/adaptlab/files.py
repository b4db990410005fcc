"""Writing files safely: output folders checked up front, JSON and text written atomically, folder sizes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adaptlab.errors import ResourceError

log = logging.getLogger(__name__)


def _check_writable(folder: Path, *, shown: Path, field: str) -> None:
    """Create ``folder`` (and parents) and write a probe file in it; `ResourceError` naming ``shown`` if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".adaptlab-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a parent of it is a file"
        raise ResourceError(f"cannot write the output folder: {reason}", file=shown, field=field,
                            hint="choose a writable folder") from None


def prepare_output_dir(path: str | Path, *, field: str = "out_dir") -> Path:
    """Create the output folder ``path`` (and parents) and check that files can be written in it.

    Raises `ResourceError` naming the folder when it cannot be used: a file is in the way, a parent is a file,
    or the folder is not writable (read-only mount, permissions).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResourceError("the output path is a file, not a folder", file=path, field=field,
                            hint="choose a folder name that does not exist yet, or an existing folder")
    _check_writable(path, shown=path, field=field)
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` via a temp file + os.replace (never half-written)."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """JSON encoding of numpy values, paths and sets (for ``json.dumps(default=...)``)."""
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file + os.replace (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dir_bytes(path: str | Path) -> int:
    """Total size of the regular files under ``path`` (artifact size)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def partial_dir(target: str | Path) -> Path:
    """Where a run destined for ``target`` is written until it is complete (``.NAME.partial`` beside it)."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


def check_run_dir(target: str | Path, *, replace: bool = False, resume: bool = False, field: str = "--out") -> None:
    """Whether a run may be written to ``target`` (see `staged_dir`), checked before any work: not a file, its
    folder writable, an earlier run kept unless ``replace``/``resume``, an interrupted run's checkpoints kept
    unless ``resume``/``replace``. Raises `ResourceError` naming ``target``."""
    target = Path(target)
    partial = partial_dir(target)
    if target.exists() and not target.is_dir():
        raise ResourceError("the output path is a file, not a folder", file=target, field=field,
                            hint="choose a folder name that does not exist yet")
    if target.is_dir() and any(target.iterdir()) and not (replace or resume):
        raise ResourceError("already holds an earlier run (or other files), which is kept", file=target, field=field,
                            hint="pass --force to replace it, or choose another --out")
    if partial.exists() and not (resume or replace) and (partial / "checkpoints").is_dir():
        raise ResourceError("an interrupted run left checkpoints here", file=partial, field=field,
                            hint="pass --resume to continue it, or --force to start over")
    _check_writable(target.parent, shown=target, field=field)


@contextmanager
def staged_dir(target: str | Path, *, replace: bool = False, resume: bool = False, primary: bool = True,
               field: str = "--out") -> Iterator[Path]:
    """Write a run into `partial_dir` and move it to ``target`` only when complete: a crash never leaves a
    half-written ``target``, and an earlier run there is kept, byte for byte, unless ``replace`` (``--force``)
    or ``resume`` (``--resume``) is given. A crashed run's partial folder keeps its checkpoints for ``resume``;
    without them it is removed. In a multi-process launch only the ``primary`` process checks, cleans and moves
    the folder; the others just use it."""
    target = Path(target)
    partial = partial_dir(target)
    if not primary:
        partial.mkdir(parents=True, exist_ok=True)
        yield partial
        return
    check_run_dir(target, replace=replace, resume=resume, field=field)
    if partial.exists():
        if resume:
            log.info("continuing the interrupted run in %s", partial)
        else:
            shutil.rmtree(partial)
    elif resume and (target / "checkpoints").is_dir():  # a run written before runs were staged
        os.rename(target, partial)
    prepare_output_dir(partial, field=field)
    try:
        yield partial
    except BaseException:
        if not (partial / "checkpoints").is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(partial, target)
    shutil.rmtree(old, ignore_errors=True)
