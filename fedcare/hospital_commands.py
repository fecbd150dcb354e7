"""``fedcare hospital ...``: a hospital's side, run by its own IT staff."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from client.site_settings import SiteSettings
from client.supernode import SUPEREXEC_POLL_SECONDS, prepare_state, supernode_command
from fedcare.console import console, fail
from shared.errors import ConfigError, FedcareError
from shared.flower_process import flower_environment, flower_executable, run_foreground

hospital_app = typer.Typer(
    help="Run a hospital: train on local data, under the hospital's own privacy limits.",
    no_args_is_help=True,
)

SiteConfig = Annotated[Path, typer.Option("--config", help="The hospital's site.toml.")]


def _load(config: Path) -> SiteSettings:
    settings = SiteSettings.load(config)
    for label, path in (
        ("hospital.data", settings.node.data),
        ("hospital.contract", settings.node.contract),
        ("hospital.credentials", settings.credentials),
    ):
        if not path.exists():
            raise ConfigError(label, f"{path} (from {config}) does not exist")
    return settings


@hospital_app.command()
def start(config: SiteConfig = Path("site.toml")) -> None:
    """Connect this hospital to the aggregator (runs until stopped); data never leaves."""
    try:
        settings = _load(config)
        node_config = prepare_state(settings)
        executable = flower_executable("flower-supernode")
    except FedcareError as error:
        raise fail(error) from None
    console.print(
        f"{settings.node.name}: connecting to [bold]{settings.aggregator}[/] with TLS and node "
        "authentication; patient data stays in this hospital"
    )
    environment = flower_environment(
        settings.node.state / "flwr-home", {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": SUPEREXEC_POLL_SECONDS}
    )
    raise typer.Exit(run_foreground(supernode_command(settings, executable, node_config), environment))


@hospital_app.command()
def check(config: SiteConfig = Path("site.toml")) -> None:
    """Preflight: credentials, certificates, aggregator over TLS, data vs contract, budget left."""
    from client.preflight import Status, run_preflight

    try:
        settings = SiteSettings.load(config)
    except FedcareError as error:
        raise fail(error) from None
    results = run_preflight(settings)
    colours = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    table = Table(title=f"Readiness of {settings.node.name}")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for result in results:
        table.add_row(result.name, f"[{colours[result.status]}]{result.status.value}[/]", result.detail)
    console.print(table)
    failed = [r for r in results if r.status is Status.FAIL]
    console.print("[bold red]not ready[/]" if failed else "[bold green]ready[/]")
    raise typer.Exit(1 if failed else 0)
