"""Stopping a run cleanly: SIGINT/SIGTERM stop it at once, except during a store write, which is finished first.

`RunSignals` installs the handlers for the run; `StopRun` is what the handler raises (a BaseException, so a
cell's ``except Exception`` cannot swallow it); the runner turns it into `RunInterrupted` (exit 130/143).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from adaptlab.errors import AdaptlabError

log = logging.getLogger(__name__)

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class RunInterrupted(AdaptlabError):
    """The run stopped on SIGINT/SIGTERM after finishing any store write; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, saved: int) -> None:
        self.signum, self.saved, self.exit_code = signum, saved, 128 + signum
        super().__init__(f"interrupted: {saved} cells saved; resume with --resume")


class StopRun(BaseException):
    """Raised by the signal handler; a BaseException so a cell's ``except Exception`` cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class RunSignals:
    """SIGINT/SIGTERM handlers for the run: stop at once outside `critical` sections, else right after."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0
        self._raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> RunSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
                self._old[sig] = signal.signal(sig, self._handle)
        else:
            log.warning("not on the main thread: Ctrl-C/SIGTERM handling is left to the caller")
        return self

    def reinstall(self) -> None:
        """Take the signals back after a library replaced the handlers (``ray.init`` sets its own)."""
        if self._old and threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
                signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self._depth == 0:
            self.check()

    def check(self) -> None:
        """Raise `StopRun` (once) if a signal arrived."""
        if self.signum is not None and not self._raised:
            self._raised = True
            raise StopRun(self.signum)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section a signal never interrupts (the store write); a pending stop is raised after it."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        self.check()
