"""The typer application, its consoles and the helpers the commands share."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Optional

import typer
from rich.console import Console

from adaptlab.errors import AdaptlabError

app = typer.Typer(
    name="adaptlab",
    help="Prompt it or fine-tune it? Adapt an LLM both ways, measure both, and get a recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
def _width(stream: object) -> int | None:
    """Rich's own width for a terminal (or ``$COLUMNS``); a wide layout when the output is a file or a pipe."""
    if os.environ.get("COLUMNS") or getattr(stream, "isatty", lambda: False)():
        return None
    return WIDE


WIDE = 160
"""Columns of the layout when the output is not a terminal (a file, a pipe, a CI log)."""
console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

DEFAULT_MODEL = "smollm2-135m-instruct"
TRUST_HELP = "Let a model folder run its own Python code (trusted sources only)."
PICKLE_HELP = "Allow pickle (.bin) weights, which can run code when loaded (trusted sources only)."
EXIT_CELLS_FAILED = 3
"""`compare` / `demo` exit status when the run finished but some cells failed (1: a user error, 2: a command-line
usage error from click, 130/143: interrupted)."""


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )


def parse_options(pairs: list[str], flag: str = "--option") -> dict[str, Any]:
    """``key=value`` pairs; values read as YAML (``k=8``, ``lr=1e-3``, ``content_free=[N/A, ""]``)."""
    from adaptlab.config import parse_scalar

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AdaptlabError(f"{flag} expects key=value, got '{pair}'", field=flag)
        options[key.strip()] = parse_scalar(value)
    return options


def model_spec(name: str, *, backend: str = "hf", base_url: Optional[str] = None, **settings: Any) -> Any:
    """The `ModelSpec` a command line describes; a local model's name is checked at once (no torch, no network)."""
    from adaptlab.models import ModelSpec, check_model_name

    spec = ModelSpec(name=name, backend=backend, base_url=base_url, **settings)
    if spec.backend == "hf":
        check_model_name(spec.name)
    return spec


def human_bytes(n: Optional[int]) -> str:
    if not n:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def print_result(metrics: dict, *, title: str) -> None:
    """One strategy's headline numbers from its metrics.json dict."""
    from rich.markup import escape
    from rich.table import Table

    m = metrics["metric"]
    q = metrics["cost"]["query"]
    t = metrics["cost"]["train"]
    table = Table(title=escape(title))
    for col in ("metric", "value", "95% CI", "n", "prompt tok/query", "latency p50", "fit seconds"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    table.add_row(
        m["name"], f"{m['value']:.3f}", f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]", str(metrics["n"]),
        f"{q.get('prompt_tokens', 0):.0f}", f"{(q.get('latency_p50_s') or 0) * 1000:.0f} ms",
        f"{t.get('seconds', 0):.1f}",
    )
    console.print(table)
