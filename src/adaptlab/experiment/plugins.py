"""Plugins: Python modules or ``.py`` files an experiment lists under ``plugins:``, which register strategies
through the public registry (`adaptlab.strategies.register_strategy` / `strategy`) when imported.

A file is imported under a module name derived from its resolved path, once per process (loading the same
experiment twice, or a Ray worker loading it again, registers nothing twice). Plugins are code: list only
files you trust, as with any Python import.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from adaptlab.errors import ConfigError

log = logging.getLogger(__name__)


def plugin_module_name(path: Path) -> str:
    """The module name a plugin file is imported as (stable for one resolved path)."""
    digest = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:12]
    return f"adaptlab_plugin_{path.stem}_{digest}"


def load_plugin(entry: str, base_dir: Path | None) -> str:
    """Import one plugin: a ``.py`` file (relative to ``base_dir``) or a module name; returns the module name."""
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = Path(entry).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        path = path.resolve()
        if not path.is_file():
            raise ConfigError(f"plugin file not found: {path}", field="plugins",
                              hint="a plugin path is relative to the experiment file")
        name = plugin_module_name(path)
        if name in sys.modules:
            return name
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import plugin {path}", field="plugins")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            del sys.modules[name]
            raise
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"plugin {path.name} failed to import: {type(exc).__name__}: {exc}",
                              field="plugins") from None
        log.info("loaded plugin %s", path)
        return name
    try:
        importlib.import_module(entry)
    except ImportError as exc:
        raise ConfigError(f"cannot import plugin module '{entry}': {exc}", field="plugins",
                          hint="give an importable module name or a .py file relative to the experiment") from None
    return entry


def load_plugins(entries: Sequence[str], base_dir: Path | None) -> list[str]:
    """Import every plugin in order; returns their module names."""
    return [load_plugin(entry, base_dir) for entry in entries]
