"""``--track`` and ``fedcare track``: a run's settings, rounds and model in a tracker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcare.console import console, fail
from fedcare.shared.errors import FedcareError

Track = Annotated[
    list[str] | None,
    typer.Option(
        "--track",
        help="Export the run to mlflow (./mlruns unless --tracking-uri) or tensorboard.",
    ),
]
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default ./mlruns).")
]


def check_trackers(names: list[str] | None) -> None:
    """Refuse an unknown ``--track`` value before a run starts.

    Raises
    ------
    FedcareError
        Naming the value and the trackers known.
    """
    from fedcare.server.tracking import parse_trackers

    parse_trackers(names or [])


def track_after(run: Path, names: list[str] | None, uri: str | None) -> None:
    """Export a finished (or stopped) run to the trackers named, if any, and say where."""
    if not names:
        return
    from fedcare.server.tracking import parse_trackers, track_run

    try:
        for where in track_run(run, parse_trackers(names), tracking_uri=uri):
            console.print(f"tracked: {where}")
    except FedcareError as error:
        raise fail(error) from None


def track(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    to: Annotated[list[str], typer.Option("--to", help="mlflow and/or tensorboard.")] = ["mlflow"],  # noqa: B006 - typer reads the default, never mutates it
    tracking_uri: TrackingUri = None,
) -> None:
    """Export a run folder's settings, per-round metrics, epsilon and model to a tracker."""
    track_after(run, to, tracking_uri)
