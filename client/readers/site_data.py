"""Read a hospital's data with the reader its contract's format names.

The one place that answers "which reader": a table contract's file goes to
:mod:`client.readers.table`, an images contract's to
:mod:`client.readers.images`, a sequences contract's to
:mod:`client.readers.sequences`. Each checks the data against the contract and
returns it as the model trains on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedcare.client.readers.images import read_images
from fedcare.client.readers.sequences import read_sequences
from fedcare.client.readers.table import load_site_table
from fedcare.shared.contract import DataContract
from fedcare.shared.data import Examples, InputKind

_READERS: dict[InputKind, Callable[[Path, DataContract], Examples]] = {
    InputKind.TABLE: load_site_table,
    InputKind.IMAGES: read_images,
    InputKind.SEQUENCES: read_sequences,
}


def read_site_data(path: Path, contract: DataContract) -> Examples:
    """Read a hospital's data file (or image folder) and check it against ``contract``.

    Parameters
    ----------
    path : Path
        The hospital's data: a CSV or Parquet table, a ``.npz`` file or folder
        of images, or a long-format CSV or Parquet sequence file, as the
        contract's format says.
    contract : DataContract
        The federation's contract.

    Returns
    -------
    examples : Examples
        The inputs, with labels as the contract's task trains on them.

    Raises
    ------
    DataError
        If the data breaks the contract, listing every problem found
        (never a value from the data).
    """
    return _READERS[contract.input_kind()](path, contract)
