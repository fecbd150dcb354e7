"""``fedcare``: the command line.

Each command parses its options into a :class:`shared.config.RunConfig` at the
edge; a bad setting stops everything with one sentence naming it, exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from shared.config import FlatValue, RunConfig
from shared.errors import FedcareError
from simulations.scenarios import DEFAULT_SCENARIO, SCENARIOS, scenario_overrides

app = typer.Typer(
    name="fedcare",
    help="Federated, privacy-preserving learning for hospitals (Flower + Opacus + SecAgg+).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Federated, privacy-preserving learning for hospitals."""


def _configure_logging() -> None:
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Opacus calls logging.basicConfig on import; without this Flower's lines print twice.
    logging.getLogger("flwr").propagate = False
    handler = RichHandler(console=errors, show_path=False, markup=False)
    for name in ("fedcare", "server", "client", "simulations"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = [handler]
        logger.propagate = False


def _fail(error: Exception) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}", highlight=False)
    return typer.Exit(code=2)


def _parse_set(pairs: list[str]) -> dict[str, FlatValue]:
    """Parse ``key=value`` pairs; values are read as JSON (numbers, true/false) or kept as text."""
    parsed: dict[str, FlatValue] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise FedcareError(f"--set expects key=value, got '{pair}'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parsed[key.strip()] = value
    return parsed


@app.command()
def simulate(  # noqa: PLR0913 - one option per documented setting
    scenario: Annotated[str, typer.Option(help=f"Preset: {', '.join(SCENARIOS)}.")] = DEFAULT_SCENARIO,
    hospitals: Annotated[int | None, typer.Option(help="Number of virtual hospitals.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Epsilon each hospital may spend in the run.")] = None,
    delta: Annotated[float | None, typer.Option(help="Delta of the DP guarantee.")] = None,
    partition: Annotated[str | None, typer.Option(help="iid, dirichlet, quantity or natural.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="Dirichlet concentration (skew).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every data split.")] = None,
    model: Annotated[str | None, typer.Option(help="Model from the registry: logreg or mlp.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<timestamp>).")] = None,
    no_dp: Annotated[bool, typer.Option("--no-dp", help="Turn DP-SGD OFF (updates are not private).")] = False,
    no_secagg: Annotated[
        bool, typer.Option("--no-secure-aggregation", help="Turn SecAgg+ OFF (aggregator sees each update).")
    ] = False,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Any run-config key=value, e.g. --set local-epochs=3.")
    ] = None,
) -> None:
    """Simulate a federation of virtual hospitals on this machine (DP and SecAgg+ on)."""
    _configure_logging()
    options: dict[str, Any] = {
        "hospitals": hospitals,
        "num-server-rounds": rounds,
        "epsilon": epsilon,
        "delta": delta,
        "partition": partition,
        "dirichlet-alpha": alpha,
        "seed": seed,
        "model": model,
        "out-dir": str(out) if out is not None else None,
        "differential-privacy": False if no_dp else None,
        "secure-aggregation": False if no_secagg else None,
    }
    try:
        flat = {**scenario_overrides(scenario), **_parse_set(settings or [])}
        flat |= {key: value for key, value in options.items() if value is not None}
        config = RunConfig.from_flat(flat)
        # Imported here: the simulation stack is heavy and --help should be instant.
        from simulations.simulate import simulate as run_simulation

        summary = run_simulation(config)
    except FedcareError as error:
        raise _fail(error) from None
    _print_summary(summary, Path(summary["config"]["out-dir"]))


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from fedcare.tables import comparison_table, epsilon_table, rounds_table
    from server.report import METRICS_JSON

    metric_names = list(summary["final"]["federated"]) or list(summary["final"].get("pooled", {}))
    metrics = json.loads((run_dir / METRICS_JSON).read_text(encoding="utf-8"))
    console.print(rounds_table(metrics, metric_names))
    if summary["privacy"]["differential_privacy"]:
        console.print(epsilon_table(metrics, summary))
    console.print(comparison_table(summary, metric_names))
    for warning in summary["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(f"run {summary['status']}; report, plot and model in [bold]{run_dir}[/]")


def main() -> None:
    """Entry point of the ``fedcare`` script."""
    app()
