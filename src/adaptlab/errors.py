"""User-facing errors: one clear line naming the file, line and field; the CLI exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class AdaptlabError(Exception):
    """An error caused by the user's input or environment, shown as one line without a traceback.

    ``file``, ``line`` and ``field`` locate the problem; ``hint`` suggests a fix.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line is not None else "")
        if self.field:
            where = f"{where} [{self.field}]" if where else f"[{self.field}]"
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(AdaptlabError):
    """A task, experiment or strategy configuration is invalid."""


class DataError(AdaptlabError):
    """A data file is missing, malformed or inconsistent with its task."""


class ModelError(AdaptlabError):
    """A model name cannot be resolved or loaded."""


class ResourceError(AdaptlabError):
    """The machine cannot give the run what it needs: a writable output folder, enough memory."""


def closest(name: str, valid: Iterable[str], *, cutoff: float = 0.5) -> str | None:
    """The valid name closest to ``name`` (for 'did you mean' hints), or None."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=cutoff)
    return matches[0] if matches else None


