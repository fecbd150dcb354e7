"""``fedcare hospital ...``: a hospital's side, run by its own IT staff."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedcare.audit_commands import audit_app
from fedcare.client.site_settings import SitePrivacy, SiteSettings
from fedcare.client.state_files import FLWR_HOME, WORKER_PID_FILE
from fedcare.client.supernode import prepare_state, supernode_command, worker_command
from fedcare.console import console, errors, fail
from fedcare.shared.errors import ConfigError, FedcareError
from fedcare.shared.flower_process import flower_environment, flower_executable, port_open
from fedcare.shared.private_files import write_private
from fedcare.shared.supervision import Program, Supervisor

if TYPE_CHECKING:
    from fedcare.client.ledger import PrivacyLedger

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
    """Connect this hospital to the aggregator (runs until stopped); data never leaves.

    Runs Flower's SuperNode and fedcare's worker beside it, starts the worker again
    if it stops, and stops both on Ctrl-C or SIGTERM.
    """
    try:
        settings = _load(config)
        node_config = prepare_state(settings)
        executable = flower_executable("flower-supernode")
    except FedcareError as error:
        raise fail(error) from None
    console.print(
        f"{settings.node.name}: connecting to [bold]{settings.aggregator}[/] with TLS and node "
        "authentication; patient data stays in this hospital, and only the fedcare installed "
        "here runs"
    )
    environment = flower_environment(settings.node.state / FLWR_HOME)
    pid_file = settings.node.state / WORKER_PID_FILE

    def record_worker(program: Program, pid: int) -> None:
        if program.name == "worker":
            write_private(pid_file, f"{pid}\n".encode())

    with Supervisor(on_start=record_worker) as supervisor:
        try:
            supervisor.start(
                Program(
                    "supernode",
                    supernode_command(settings, executable, node_config),
                    environment,
                    ready=lambda: port_open(settings.runtime_port),
                )
            )
            supervisor.start(Program("worker", worker_command(settings), environment, restart=True))
        except FedcareError as error:
            raise fail(error) from None
        code = supervisor.wait()
        if code:
            errors.print(f"{supervisor.failure()}; stopping the hospital")
    raise typer.Exit(code)


@hospital_app.command()
def approve(
    config_hash: Annotated[
        str,
        typer.Argument(metavar="HASH", help="The run-configuration hash `fedcare run` printed."),
    ],
    config: SiteConfig = Path("site.toml"),
) -> None:
    """Approve a run configuration: this hospital then takes part in runs with that hash."""
    from fedcare.client.site_policy import approve_run

    try:
        settings = SiteSettings.load(config)
        added = approve_run(config, config_hash.strip().lower())
    except FedcareError as error:
        raise fail(error) from None
    verb = "approved" if added else "was already approved"
    console.print(f"{settings.node.name}: run configuration {config_hash} {verb} in {config}")
    if not settings.policy.require_approval:
        console.print(
            "note: [policy] require-approval is false, so runs within the policy take part "
            "whether approved or not"
        )


@hospital_app.command()
def runs(config: SiteConfig = Path("site.toml")) -> None:
    """Which runs asked for this hospital's data, and what it decided (from its audit log)."""
    from fedcare.client.admission import run_decisions
    from fedcare.client.state_files import AUDIT_FILE

    try:
        settings = SiteSettings.load(config)
        log = settings.node.state / AUDIT_FILE
        decisions = run_decisions(log) if log.exists() else []
    except FedcareError as error:
        raise fail(error) from None
    table = Table(title=f"Runs that asked {settings.node.name}")
    # Identifiers are never wrapped (a hash prefix is what the operator compares).
    for column in ("run", "first asked (UTC)", "configuration"):
        table.add_column(column, no_wrap=True)
    for column in ("approved", "decision", "refused"):
        table.add_column(column, no_wrap=True)
    table.add_column("last reason")
    for item in decisions:
        table.add_row(
            item.run,
            item.first_seen[:19].replace("T", " "),
            item.config_hash[:12] if item.config_hash else "unreadable",
            "yes" if item.config_hash in settings.policy.approved else "no",
            "took part" if item.admitted else "refused",
            str(item.refusals),
            item.last_reason,
        )
    # Piped into a file or a ticket, the table is 132 columns wide and keeps every word.
    (console if console.is_terminal else Console(width=132)).print(table)


@hospital_app.command()
def check(config: SiteConfig = Path("site.toml")) -> None:
    """Preflight: credentials, certificates, aggregator over TLS, data vs contract, budget left."""
    from fedcare.client.preflight import Status, run_preflight

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
        table.add_row(
            result.name, f"[{colours[result.status]}]{result.status.value}[/]", result.detail
        )
    console.print(table)
    failed = [r for r in results if r.status is Status.FAIL]
    console.print("[bold red]not ready[/]" if failed else "[bold green]ready[/]")
    raise typer.Exit(1 if failed else 0)


def _budget_table(ledger: PrivacyLedger, name: str, limits: SitePrivacy) -> Table:
    # One row per dataset this hospital has ever released from.
    summary = Table(title=f"Privacy budget of {name} (delta {limits.delta:g})")
    columns = ("dataset", "fingerprint", "spent", "cap", "remaining", "releases", "runs")
    for column in columns:
        summary.add_column(column, justify="right")
    for item in ledger.datasets():
        spent = ledger.spent(item.dataset_id, label=item.label, delta=limits.delta)
        remaining = max(limits.max_epsilon - spent, 0.0)
        summary.add_row(
            item.label,
            item.dataset_id[:12],
            f"{spent:.3f}",
            f"{limits.max_epsilon:g}",
            f"{remaining:.3f}",
            str(item.entries),
            str(item.runs),
        )
    return summary


def _release_table(ledger: PrivacyLedger, dataset: str) -> Table:
    # Every release booked against the hospital's current dataset, oldest first.
    history = Table(title=f"Releases from dataset '{dataset}'")
    for column in (
        "recorded (UTC)",
        "run",
        "round",
        "release",
        "noise",
        "sample rate",
        "steps",
        "epsilon after",
        "status",
    ):
        history.add_column(column, justify="right")
    for entry in ledger.history("", label=dataset):
        history.add_row(
            f"{entry.recorded_at:%Y-%m-%d %H:%M:%S}",
            entry.run_id,
            str(entry.server_round),
            "evaluation" if entry.is_evaluation else "model update",
            f"{entry.noise_multiplier:.3f}",
            f"{entry.sample_rate:.4f}",
            str(entry.steps),
            f"{entry.epsilon_after:.3f}",
            entry.status.value,
        )
    return history


@hospital_app.command()
def budget(config: SiteConfig = Path("site.toml")) -> None:
    """Privacy budget per dataset: spent, cap, remaining, and every release recorded."""
    from fedcare.client.ledger import PrivacyLedger, ledger_path

    try:
        settings = SiteSettings.load(config)
        path = ledger_path(settings.node.state)
        if not path.exists():
            console.print(f"{settings.node.name}: no release recorded yet ({path} does not exist)")
            return
        with PrivacyLedger(path) as ledger:
            console.print(_budget_table(ledger, settings.node.name, settings.node.privacy))
            console.print(_release_table(ledger, settings.node.dataset))
    except FedcareError as error:
        raise fail(error) from None


@hospital_app.command()
def keygen(
    config: Annotated[
        Path | None, typer.Option("--config", help="site.toml: the key goes to its credentials.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Or: the folder for the key.")] = None,
) -> None:
    """Make this hospital's node key pair; only the public half (node.pub) is sent out."""
    from fedcare.shared.hospital_credentials import NODE_PUBLIC_KEY, generate_node_key

    try:
        if config is not None and out is None:
            folder = SiteSettings.load(config).credentials
        elif out is not None and config is None:
            folder = out
        else:
            raise ConfigError("--config", "give either --config site.toml or --out FOLDER")
        fingerprint = generate_node_key(folder)
    except FedcareError as error:
        raise fail(error) from None
    console.print(
        f"node key pair made in {folder} (fingerprint {fingerprint}); node.key never leaves it",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    console.print(
        f"send {folder / NODE_PUBLIC_KEY} to the federation's operator and tell them the "
        "fingerprint by phone; put the ca.crt and bundle.toml they return into "
        f"{folder}, then run `fedcare hospital check`",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


hospital_app.add_typer(audit_app, name="audit")
