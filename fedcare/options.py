"""Command-line options shared by ``fedcare simulate`` and ``fedcare run``, and their parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName
from fedcare.shared.errors import ConfigError, FedcareError

Hospitals = Annotated[int | None, typer.Option(help="Number of hospitals taking part.")]
Rounds = Annotated[int | None, typer.Option(help="Federated rounds.")]
Epsilon = Annotated[float | None, typer.Option(help="Epsilon each hospital may spend in the run.")]
Delta = Annotated[float | None, typer.Option(help="Delta of the DP guarantee.")]
Model = Annotated[
    str | None,
    typer.Option(
        help=f"Model from the registry ({', '.join(ModelName)}), or an installed model "
        "plugin's name with --set model-version=VERSION."
    ),
]
Out = Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<timestamp>).")]
NoDp = Annotated[bool, typer.Option("--no-dp", help="Turn DP-SGD OFF (updates are not private).")]
NoSecagg = Annotated[
    bool,
    typer.Option("--no-secure-aggregation", help="Turn SecAgg+ OFF (aggregator sees each update)."),
]
Resume = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue the stopped run in this folder from its last complete round.",
    ),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        help="Show Flower's and Ray's log lines too (they always go to <run folder>/fedcare.log).",
    ),
]
Settings = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any run-config key=value, e.g. --set local-epochs=3."),
]


def parse_set(pairs: list[str] | None) -> dict[str, FlatValue]:
    """Parse ``key=value`` pairs; values are read as JSON (numbers, true/false) or kept as text."""
    parsed: dict[str, FlatValue] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise FedcareError(f"--set expects key=value, got '{pair}'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed[key.strip()] = value
    return parsed


def common_overrides(  # noqa: PLR0913 - one argument per shared option
    *,
    hospitals: int | None,
    rounds: int | None,
    epsilon: float | None,
    delta: float | None,
    model: str | None,
    out: Path | None,
    no_dp: bool,
    no_secagg: bool,
) -> dict[str, Any]:
    """Run-config overrides for the options given (``None`` ones are left out)."""
    options: dict[str, Any] = {
        "hospitals": hospitals,
        "num-server-rounds": rounds,
        "epsilon": epsilon,
        "delta": delta,
        "model": model,
        "out-dir": str(out.resolve()) if out is not None else None,
        "differential-privacy": False if no_dp else None,
        "secure-aggregation": False if no_secagg else None,
    }
    return {key: value for key, value in options.items() if value is not None}


def resumed_run_config(
    run_path: Path, overrides: dict[str, Any], *other_options: object
) -> RunConfig:
    """Return the configuration of a resume: the run's own, with no option changing it.

    Raises
    ------
    ConfigError
        If any other option was given (a resume must be the same run), or the
        folder holds no run configuration.
    """
    if overrides or any(option is not None for option in other_options):
        raise ConfigError(
            "resume",
            "--resume continues a run with its own settings; drop the other options "
            f"({', '.join(overrides) or 'given'}), or start a new run to change them",
        )
    from fedcare.server.resume import resume_config  # heavy (torch): only when resuming

    return resume_config(run_path)
