"""Where the command line writes: tables to stdout, logs and errors to stderr."""

from __future__ import annotations

import logging
import os

import typer
from rich.console import Console
from rich.logging import RichHandler

console = Console()
errors = Console(stderr=True)


def fail(error: Exception, code: int = 2) -> typer.Exit:
    """Print ``error`` as one red line and return the exit to raise (code 2: bad input)."""
    errors.print(f"[bold red]error:[/] {error}", highlight=False)
    return typer.Exit(code=code)


def configure_logging() -> None:
    """Send fedcare's and Flower's log lines to stderr once each, through rich."""
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    # Opacus calls logging.basicConfig on import; without this Flower's lines print twice.
    logging.getLogger("flwr").propagate = False
    handler = RichHandler(console=errors, show_path=False, markup=False)
    for name in ("fedcare", "server", "client", "simulations"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = [handler]
        logger.propagate = False
