"""``fedcare ca ...``: the federation's certificate authority, without a PKI ceremony."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedcare.console import console, fail
from server.certificate_authority import CertificateAuthority, init_ca
from shared.errors import FedcareError

ca_app = typer.Typer(help="Issue and revoke the federation's credentials.", no_args_is_help=True)

CaDir = Annotated[Path, typer.Option("--dir", help="The CA folder.")]


@ca_app.command("init")
def init(
    name: Annotated[str, typer.Option(help="The federation's name, shown in certificates.")],
    folder: CaDir = Path("ca"),
) -> None:
    """Create the federation's CA (once; it signs the aggregator's certificate)."""
    try:
        init_ca(folder, name=name)
    except FedcareError as error:
        raise fail(error) from None
    console.print(f"CA created in [bold]{folder}[/]; keep {folder / 'ca.key'} offline and backed up")


@ca_app.command("server")
def server(
    host: Annotated[list[str], typer.Option("--host", help="A name or IP hospitals dial (repeatable).")],
    folder: CaDir = Path("ca"),
) -> None:
    """Issue the aggregator's TLS certificate for the given hosts."""
    try:
        written = CertificateAuthority.load(folder).issue_server_certificate(host)
    except FedcareError as error:
        raise fail(error) from None
    console.print(f"aggregator certificate for {', '.join(host)} in [bold]{written}[/]")
    console.print(f"start the aggregator with: fedcare aggregator start --tls {written} --state STATE")


@ca_app.command("add-hospital")
def add_hospital(
    name: Annotated[str, typer.Argument(help="The hospital's name (letters, digits, - and _).")],
    aggregator: Annotated[str, typer.Option(help="HOST:PORT the hospital connects to.")],
    folder: CaDir = Path("ca"),
) -> None:
    """Create a hospital's key pair and bundle; nobody else's credentials change."""
    try:
        bundle = CertificateAuthority.load(folder).add_hospital(name, aggregator_address=aggregator)
    except FedcareError as error:
        raise fail(error) from None
    console.print(f"bundle for {name} in [bold]{bundle.folder}[/] (key fingerprint {bundle.fingerprint[:16]})")
    console.print("send that folder to the hospital over a trusted channel; then allow its key with:")
    console.print(f"  fedcare aggregator register {name} --state STATE --ca {folder}")


@ca_app.command("remove-hospital")
def remove_hospital(
    name: Annotated[str, typer.Argument(help="The hospital to revoke.")],
    folder: CaDir = Path("ca"),
) -> None:
    """Revoke one hospital's credentials; the others are untouched."""
    try:
        record = CertificateAuthority.load(folder).remove_hospital(name)
    except FedcareError as error:
        raise fail(error) from None
    console.print(f"{name} revoked (key fingerprint {record.fingerprint[:16]})")
    console.print("also remove it at the aggregator: `flwr supernode ls` shows its node id, then")
    console.print("  fedcare aggregator unregister NODE_ID --state STATE")


@ca_app.command("list")
def list_hospitals(folder: CaDir = Path("ca")) -> None:
    """List every hospital the CA issued credentials to."""
    try:
        records = CertificateAuthority.load(folder).hospitals()
    except FedcareError as error:
        raise fail(error) from None
    table = Table(title=f"Hospitals of {folder}")
    for column in ("hospital", "key fingerprint", "created", "status"):
        table.add_column(column)
    for record in records:
        status = f"revoked {record.revoked[:19]}" if record.revoked else "active"
        table.add_row(record.name, record.fingerprint[:16], record.created[:19], status)
    console.print(table)
