"""``fedcare hospital audit ...`` and ``fedcare aggregator audit ...``: check an audit log.

Exit codes: 0 the log is intact, 1 it is broken (the line says where and why),
2 the input is unusable (missing file, malformed ``--head``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fedcare.console import console, fail
from fedcare.shared.audit import AuditHeadError, AuditVerification, parse_head, verify_audit_log
from fedcare.shared.errors import FedcareError

audit_app = typer.Typer(
    help="Check a tamper-evident audit log (hash-chained JSON lines).",
    no_args_is_help=True,
)

Head = Annotated[
    str | None,
    typer.Option(
        "--head",
        metavar="SEQ:HASH",
        help="A head recorded earlier (e.g. in a run report); detects removed last entries.",
    ),
]


@audit_app.callback()
def _audit() -> None:
    """Check a tamper-evident audit log (hash-chained JSON lines)."""


@audit_app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="The audit log (JSON lines).", show_default=False)],
    head: Head = None,
) -> None:
    """Check every entry's hash and link; exit 0 if intact, 1 if broken, 2 if unreadable."""
    try:
        expected = parse_head(head) if head is not None else None
    except AuditHeadError as error:
        raise typer.BadParameter(str(error), param_hint="--head") from None
    try:
        verdict = verify_audit_log(path, expected_head=expected)
    except FedcareError as error:
        raise fail(error) from None
    console.print(_verdict_line(verdict), highlight=False)
    if not verdict.ok:
        raise typer.Exit(code=1)


def _verdict_line(verdict: AuditVerification) -> str:
    if verdict.ok:
        seq, digest = verdict.head
        return f"[green]audit log intact: {verdict.entries} entries, head {seq} {digest[:12]}[/]"
    where = f"line {verdict.first_broken_line}" if verdict.first_broken_line else "end of file"
    return (
        f"[bold red]audit log BROKEN at entry seq {verdict.first_broken_seq} ({where}):[/] "
        f"[red]{escape(verdict.reason or '')}[/]"
    )
