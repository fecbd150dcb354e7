"""``fedcare ca ...``: the federation's certificate authority, without a PKI ceremony.

Every command prints where it wrote what and the exact next step; none ever
prints key material. Only public files change hands: a hospital's ``node.pub``
comes in, the CA certificate and its ``bundle.toml`` go back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from fedcare.console import console, errors, fail
from fedcare.server.ca_registry import HospitalRecord
from fedcare.server.certificate_authority import (
    SERVER_CERTIFICATE,
    SERVER_DIR,
    CertificateAuthority,
    init_ca,
)
from fedcare.server.node_registration import (
    aggregator_running,
    linked_aggregator,
    unregister_revoked,
)
from fedcare.shared.certificate_checks import verify_server_certificate
from fedcare.shared.credentials import CA_CERTIFICATE, CredentialError, split_address
from fedcare.shared.errors import FedcareError
from fedcare.shared.hospital_credentials import BUNDLE_FILE, HospitalBundle

ca_app = typer.Typer(help="Issue and revoke the federation's credentials.", no_args_is_help=True)

CaDir = Annotated[Path, typer.Option("--dir", help="The CA folder.")]


def _say(text: str) -> None:
    # Commands must stay copy-pasteable: no wrapping, no highlighting of paths.
    console.print(text, soft_wrap=True, highlight=False)


@ca_app.command("init")
def init(
    name: Annotated[str, typer.Option(help="The federation's name, shown in certificates.")],
    folder: CaDir = Path("ca"),
    days: Annotated[int, typer.Option(help="Validity of the CA certificate.")] = 3650,
) -> None:
    """Create the federation's CA (once: re-creating it would invalidate every hospital)."""
    try:
        authority = init_ca(folder, name=name, days=days)
    except (FedcareError, OSError) as error:
        raise fail(error) from None
    _say(f"CA for '{escape(name)}' created in [bold]{escape(str(folder))}[/]")
    _say(f"CA certificate fingerprint: {authority.fingerprint}")
    _say(
        f"keep {escape(str(folder))} private and backed up: "
        "losing it means new credentials for everyone"
    )
    _say(
        f"next: fedcare ca server --dir {escape(str(folder))} --host HOST "
        "(each name or IP hospitals dial)"
    )


@ca_app.command("server")
def server(
    host: Annotated[
        list[str], typer.Option("--host", help="A name or IP hospitals dial (repeatable).")
    ],
    folder: CaDir = Path("ca"),
    days: Annotated[int, typer.Option(help="Validity of the certificate.")] = 825,
) -> None:
    """Issue (or re-issue) the aggregator's TLS certificate; hospitals are untouched."""
    try:
        issued = CertificateAuthority.load(folder).issue_server_certificate(host, days=days)
    except (FedcareError, OSError) as error:
        raise fail(error) from None
    where = escape(str(issued.folder))
    _say(f"aggregator certificate for {', '.join(issued.hosts)} in [bold]{where}[/]")
    _say(f"valid until {issued.not_after:%Y-%m-%d}; fingerprint {issued.fingerprint}")
    _say(
        "(loopback names are always included: the aggregator's own processes and the "
        "operator's commands use them)"
    )
    _say(
        "next, on the aggregator: "
        f"fedcare aggregator start --state STATE --ca {escape(str(folder))}"
    )


@ca_app.command("add-hospital")
def add_hospital(
    name: Annotated[str, typer.Argument(help="The hospital's name (letters, digits, - and _).")],
    public_key: Annotated[
        Path, typer.Option(help="The hospital's node.pub (from `fedcare hospital keygen`).")
    ],
    aggregator: Annotated[str, typer.Option(help="HOST:PORT the hospital connects to.")],
    folder: CaDir = Path("ca"),
) -> None:
    """Record a hospital's public key; write the CA certificate and bundle.toml to send back."""
    try:
        bundle = CertificateAuthority.load(folder).add_hospital(
            name, aggregator_address=aggregator, public_key=public_key
        )
    except (FedcareError, OSError) as error:
        raise fail(error) from None
    where = escape(str(bundle.folder))
    _say(f"{name} recorded with node key {bundle.fingerprint}")
    _say(
        "  compare that fingerprint with the one the hospital's `fedcare hospital keygen` "
        "printed (by phone, not by the channel the key came by)"
    )
    _say(
        f"send back {where}/{CA_CERTIFICATE} and {where}/{BUNDLE_FILE} (public files): they go "
        "into the hospital's credentials folder, next to its node.key"
    )
    _say(
        f"next, at the aggregator: fedcare aggregator register {name} "
        f"--state STATE --ca {escape(str(folder))}"
    )
    _warn_if_uncovered(folder, bundle)


def _warn_if_uncovered(folder: Path, bundle: HospitalBundle) -> None:
    # A bundle pointing at a host the server certificate does not cover fails
    # only when the hospital connects; say so now, while it is cheap to fix.
    server_certificate = folder / SERVER_DIR / SERVER_CERTIFICATE
    if not server_certificate.is_file():
        return
    try:
        host, _ = split_address(bundle.aggregator)
        verify_server_certificate(folder / CA_CERTIFICATE, server_certificate, host)
    except CredentialError as error:
        errors.print(
            f"[bold yellow]warning:[/] {escape(str(error))}", soft_wrap=True, highlight=False
        )


@ca_app.command("remove-hospital")
def remove_hospital(
    name: Annotated[str, typer.Argument(help="The hospital to revoke.")],
    folder: CaDir = Path("ca"),
) -> None:
    """Revoke one hospital's key; the aggregator refuses it from its next request on."""
    try:
        fingerprint = CertificateAuthority.load(folder).remove_hospital(name)
    except (FedcareError, OSError) as error:
        raise fail(error) from None
    _say(f"{name} revoked in {escape(str(folder))} (node key {fingerprint})")
    state = linked_aggregator(folder)
    if state is None or not aggregator_running(state):
        _say(
            "no aggregator of this CA is running: the next `fedcare aggregator start --ca "
            f"{escape(str(folder))}` unregisters {name} before it lets any hospital in"
        )
        return
    try:
        removed = unregister_revoked(state, folder)
    except FedcareError as error:
        raise fail(
            FedcareError(
                f"{error}; the aggregator in {state} still accepts {name}: run "
                f"`fedcare aggregator unregister {name} --state {state}`, or restart it"
            )
        ) from None
    if name in removed:
        _say(f"unregistered at the aggregator in {escape(str(state))}: its next request is refused")


def _when(timestamp: str) -> str:
    # ISO 8601 UTC down to the minute: enough to tell issuances apart, fits a table.
    return timestamp[:16].replace("T", " ")


def _status(record: HospitalRecord) -> str:
    return "active" if record.revoked is None else f"revoked {_when(record.revoked)}"


@ca_app.command("list")
def list_hospitals(folder: CaDir = Path("ca")) -> None:
    """List every hospital the CA issued credentials to, revoked ones included."""
    try:
        records = CertificateAuthority.load(folder).hospitals()
    except (FedcareError, OSError) as error:
        raise fail(error) from None
    if not records:
        where = escape(str(folder))
        _say(
            "no hospitals yet; add one with: fedcare ca add-hospital NAME "
            f"--dir {where} --public-key NODE.PUB --aggregator HOST:PORT"
        )
        return
    table = Table(title=f"Hospitals of {escape(str(folder))}")
    for column in ("hospital", "node key fingerprint", "created (UTC)", "status"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(record.name, record.fingerprint, _when(record.created), _status(record))
    console.print(table)
