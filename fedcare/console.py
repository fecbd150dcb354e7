"""Where the command line writes: tables to stdout, logs and errors to stderr."""

from __future__ import annotations

import logging
import os

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

console = Console()
errors = Console(stderr=True)


def fail(error: Exception, code: int = 2) -> typer.Exit:
    """Print ``error`` as one red line and return the exit to raise (code 2: bad input)."""
    errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def configure_logging(*, verbose: bool = False) -> None:
    """Send fedcare's log lines to stderr through rich, once each.

    Only warnings and errors unless ``verbose``: a run's progress display and its
    log file (``<run>/fedcare.log``) carry the rest.
    """
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    # Opacus calls logging.basicConfig on import; without this Flower's lines print twice.
    logging.getLogger("flwr").propagate = False
    handler = RichHandler(console=errors, show_path=False, markup=False)
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    logger = logging.getLogger("fedcare")
    logger.setLevel(logging.INFO)
    logger.handlers = [handler]
    logger.propagate = False
