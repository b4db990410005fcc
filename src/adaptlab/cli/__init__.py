"""The `adaptlab` command line: a thin typer + rich layer over library functions.

Heavy libraries are imported inside the commands so that `adaptlab --help` is instant.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from adaptlab.cli import info  # noqa: I001,F401  (registers init, validate, models: listed first in --help)
from adaptlab.cli import adapt, compare  # noqa: F401  (register the other commands)
from adaptlab.cli.app import app, err_console
from adaptlab.errors import AdaptlabError

__all__ = ["app", "main"]

GLOBAL_FLAGS = ("--debug", "--verbose", "-v")
"""Options of `adaptlab` itself, accepted after the command too (``adaptlab compare ... --debug``)."""


def global_flags_first(argv: list[str]) -> list[str]:
    """``argv`` with the global flags moved before the command, wherever they were written."""
    return [a for a in argv if a in GLOBAL_FLAGS] + [a for a in argv if a not in GLOBAL_FLAGS]


def main() -> None:
    """Console-script entry point: user errors become one line and a non-zero exit."""
    debug = "--debug" in sys.argv
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # adaptlab shows its own progress
    import warnings

    if not debug:  # the libraries' deprecation notices are for their developers, not for CLI users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        app(args=global_flags_first(sys.argv[1:]))
    except AdaptlabError as exc:
        if debug:
            raise
        err_console.print("[red]error:[/red] " + escape(exc.one_line()), highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as exc:  # the environment (disk full, permissions, ...): one line, like user errors
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err_console.print("[red]error:[/red] " + escape(f"{where}{exc.strerror or exc}"), highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line; --debug shows the traceback
        if debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err_console.print("[red]internal error:[/red] " + escape(f"{type(exc).__name__}: {first}")
                          + " (a bug in adaptlab; rerun with --debug for the traceback)", highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
