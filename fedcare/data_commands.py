"""``fedcare contract ...``: data contracts, starting with a draft from a hospital's own file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcare.console import console, errors, fail
from fedcare.shared.data import InputKind
from fedcare.shared.errors import ConfigError, FedcareError

contract_app = typer.Typer(
    help="Data contracts: what every hospital's data must look like.", no_args_is_help=True
)

_FORMATS = ", ".join(kind.value for kind in InputKind if kind is not InputKind.INTERACTIONS)


@contract_app.command()
def draft(
    file: Annotated[Path, typer.Argument(help="A hospital's CSV/Parquet file, .npz or folder.")],
    label: Annotated[
        str | None, typer.Option(help="The label column (tables and sequences).")
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option("--format", help=f"{_FORMATS}; inferred when left out."),
    ] = None,
    id_column: Annotated[
        list[str] | None,
        typer.Option("--id-column", help="An identifier column (never a feature); repeatable."),
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="The time step column of a sequence file.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the draft.")] = Path("contract.toml"),
) -> None:
    """Draft a contract from one hospital's file, for a person to review before sharing.

    Its ranges, categories and classes describe this hospital's data only.
    """
    # Imported here: reading files pulls in pandas and pyarrow; --help stays instant.
    from fedcare.client.contract_draft import draft_contract, render_draft

    try:
        kind = _format(data_format)
        if out.exists():
            raise ConfigError("--out", f"{out} exists; choose another --out or move it away")
        drafted = draft_contract(
            file, label=label, kind=kind, id_columns=id_column or (), time_column=time_column
        )
        text = render_draft(drafted, file)
        out.write_text(text, encoding="utf-8")
    except FedcareError as error:
        raise fail(error) from None
    for note in drafted.notes:
        console.print(f"  {note}", highlight=False)
    console.print(f"drafted [bold]{out}[/] from {file}", highlight=False)
    errors.print(
        "[yellow]Its ranges, categories and classes describe this hospital's data only: review "
        "every field, and widen the ranges to what every hospital may hold, before the "
        "federation agrees on it.[/]"
    )


def _format(value: str | None) -> InputKind | None:
    if value is None:
        return None
    kinds = [kind for kind in InputKind if kind.value == value]
    if not kinds or kinds[0] is InputKind.INTERACTIONS:
        raise ConfigError("--format", f"must be one of {_FORMATS} (got '{value}')")
    return kinds[0]
