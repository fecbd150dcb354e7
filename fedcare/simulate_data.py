"""``fedcare simulate`` on the user's own files: its options, parsed in one place.

``--contract`` with ``--data`` (one per hospital, ``NAME=PATH`` or named after the
file), or one ``--data`` file shared out by ``--site-column`` or by a partitioner
(``--partition``, ``--hospitals``); ``--test`` gives the report held-out rows.
:func:`own_data` turns them into the simulation's data source
(:class:`simulations.own_data.OwnData`) and the run-config settings they fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedcare.shared.config.data import PartitionName
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError

if TYPE_CHECKING:
    from fedcare.simulations.own_data import HospitalFile, OwnData

ContractOption = Annotated[
    Path | None,
    typer.Option("--contract", help="The federation's data contract (TOML), for --data files."),
]
DataOption = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="A hospital's file or image folder (NAME=PATH names it; else its file name does); "
        "repeat once per hospital, or give one file with --site-column or --partition.",
    ),
]
SiteColumnOption = Annotated[
    str | None,
    typer.Option(
        "--site-column", help="Split the one --data file by this column: one hospital per site."
    ),
]
TestOption = Annotated[
    Path | None,
    typer.Option("--test", help="Held-out test rows for the report (read like a hospital's file)."),
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class DataOptions:
    """The own-data options as given on the command line.

    Attributes
    ----------
    contract : Path | None
        ``--contract``.
    data : tuple[str, ...]
        Every ``--data``.
    site_column : str | None
        ``--site-column``.
    test : Path | None
        ``--test``.
    partition : bool
        Whether ``--partition`` was given (one file is dealt out by it).
    hospitals : bool
        Whether ``--hospitals`` was given (one file is dealt out, or its sites
        grouped, into that many hospitals).
    """

    contract: Path | None
    data: tuple[str, ...]
    site_column: str | None
    test: Path | None
    partition: bool
    hospitals: bool

    @property
    def given(self) -> bool:
        """Whether the simulation runs on the user's files rather than built-in data."""
        return bool(self.contract or self.data or self.site_column or self.test)


def own_data(
    options: DataOptions, config: RunConfig, scratch: Path
) -> tuple[OwnData, dict[str, FlatValue]]:
    """Build the data source and the run-config settings the files fix.

    ``config`` is the run as the other options make it (its seed, partition,
    alpha and, for a split, hospitals). A file shared out among hospitals is cut
    into ``scratch``, which must outlive the simulation.

    Returns
    -------
    tuple[OwnData, dict[str, FlatValue]]
        The source, and ``contract``, ``hospitals`` (and ``partition`` for a
        site column) to set in the run config.

    Raises
    ------
    ConfigError
        For a missing or contradictory option, naming it.
    shared.errors.DataError
        If the contract or a file cannot be used, naming it.
    """
    from fedcare.simulations.own_data import OwnData

    contract_path, text = _contract(options)
    data = OwnData(
        contract_text=text,
        contract_source=str(contract_path),
        hospitals=_hospitals(options, config, scratch, text, str(contract_path)),
        test=_existing(options.test, "--test") if options.test else None,
    )
    settings: dict[str, FlatValue] = {"contract": text, "hospitals": len(data.hospitals)}
    if options.site_column:
        settings["partition"] = PartitionName.NATURAL.value
    return data, settings


def _contract(options: DataOptions) -> tuple[Path, str]:
    if options.contract is None:
        raise ConfigError("--contract", "--data files need the federation's data contract")
    if not options.data:
        raise ConfigError("--data", "give each hospital's file with --data (or NAME=PATH)")
    path = _existing(options.contract, "--contract")
    try:
        return path, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("--contract", f"cannot read {path}: {error}") from None


def _hospitals(
    options: DataOptions, config: RunConfig, scratch: Path, text: str, source: str
) -> tuple[HospitalFile, ...]:
    from fedcare.simulations.own_data import HospitalFile

    named = [_named(entry) for entry in options.data]
    if len(named) > 1:
        if options.site_column or options.partition or options.hospitals:
            raise ConfigError(
                "--data",
                "one file per hospital fixes the hospitals; --site-column, --partition and "
                "--hospitals share out a single --data file",
            )
        names = [name for name, _ in named]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(
                "--data",
                f"two files give the hospital name '{repeated[0]}'; name them with NAME=PATH",
            )
        return tuple(HospitalFile(name, path) for name, path in named)
    if options.site_column and options.partition:
        raise ConfigError(
            "--partition", "--site-column already splits the file by site; drop --partition"
        )
    if not (options.site_column or options.partition or options.hospitals):
        raise ConfigError(
            "--data",
            "one file makes one hospital; give one --data per hospital, or share the file out "
            "with --site-column NAME or --partition iid|dirichlet|quantity --hospitals N",
        )
    return _split(named[0][1], options, config, scratch, text, source)


def _split(  # noqa: PLR0913 - the file, how to split it, where to, and its contract
    path: Path, options: DataOptions, config: RunConfig, scratch: Path, text: str, source: str
) -> tuple[HospitalFile, ...]:
    from fedcare.shared.contract import DataContract
    from fedcare.simulations.file_splits import SplitPlan, split_file

    settings = config.data
    plan = SplitPlan(
        site_column=options.site_column,
        partition=settings.partition,
        # With a site column, --hospitals groups sites; without it, one hospital per site.
        hospitals=settings.hospitals if options.hospitals or not options.site_column else None,
        alpha=settings.dirichlet_alpha,
        seed=settings.seed,
    )
    return split_file(path, DataContract.parse(text, source=source), plan, scratch)


def _named(entry: str) -> tuple[str, Path]:
    """Parse ``NAME=PATH`` or ``PATH`` (named after the file) into a hospital name and path."""
    name, sep, rest = entry.partition("=")
    path = Path(rest if sep else entry)
    if not sep:
        name = path.stem if path.suffix else path.name
    if not _NAME.fullmatch(name):
        raise ConfigError(
            "--data",
            f"'{name}' cannot name a hospital: use letters, digits, '.', '_' and '-' (up to 64), "
            "starting with a letter or digit; name it with NAME=PATH",
        )
    return name, _existing(path, "--data")


def _existing(path: Path, option: str) -> Path:
    if not path.exists():
        raise ConfigError(option, f"{path} does not exist")
    return path.resolve()


def resumed_own_data(options: DataOptions, config: RunConfig, scratch: Path) -> OwnData:
    """Rebuild a stopped simulation's data source from the same options, and check it is the same.

    A file that was shared out is cut again with the run's own partition,
    hospitals, alpha and seed, so every hospital gets the rows it had.

    Raises
    ------
    ConfigError
        If the contract or the number of hospitals differ from the run's.
    """
    from fedcare.shared.contract import DataContract

    if not config.data.contract:
        raise ConfigError(
            "--data", "this run simulated built-in data; resume it without --contract and --data"
        )
    # One file was shared out: cut it again into the run's own number of hospitals.
    one_file = len(options.data) == 1
    cut = replace(options, partition=one_file and not options.site_column, hospitals=one_file)
    data, _ = own_data(cut, config, scratch)
    run_contract = DataContract.parse(config.data.contract, source="the run's contract")
    if data.contract().fingerprint() != run_contract.fingerprint():
        raise ConfigError(
            "--contract", f"{options.contract} is not the contract the run started with"
        )
    if len(data.hospitals) != config.data.hospitals:
        raise ConfigError(
            "--data",
            f"the run has {config.data.hospitals} hospitals; the files given make "
            f"{len(data.hospitals)}",
        )
    return data
