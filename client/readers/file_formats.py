"""Read a hospital's CSV or Parquet file into checked columns; its suffix picks the format.

What the table and sequence readers share: every file-level check (it exists,
is a file, is ``.csv``, ``.parquet`` or ``.pq``, is not empty, can be read), then
the format's own reader (:mod:`client.readers.csv_files`,
:mod:`client.readers.parquet_files`) for the columns a reader's
:class:`client.readers.columns.Layout` asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedcare.client.readers.columns import Layout, Table, Unreadable, unreadable
from fedcare.client.readers.csv_files import read_csv
from fedcare.client.readers.parquet_files import read_parquet
from fedcare.client.readers.problems import Problem, Rule

_FORMATS: dict[str, Callable[[Path, str, Layout], Table]] = {
    ".csv": read_csv,
    ".parquet": read_parquet,
    ".pq": read_parquet,
}


def read_table(path: Path, layout: Layout, error: Callable[[list[Problem]], Exception]) -> Table:
    """Check a CSV or Parquet file can be read, and read the columns ``layout`` asks for.

    Parameters
    ----------
    path : Path
        The file; its suffix (``.csv``, ``.parquet`` or ``.pq``) picks the reader.
    layout : Layout
        What the loader expects of the file.
    error : Callable[[list[Problem]], Exception]
        Builds the loader's error from the one file-level problem found.

    Returns
    -------
    Table
        The header, the row count and the columns read.

    Raises
    ------
    Exception
        ``error``'s, on the first file-level problem: nothing more can be checked.
    """
    try:
        return _read(path, layout)
    except Unreadable as failure:
        raise error([failure.problem]) from None


def _read(path: Path, layout: Layout) -> Table:
    file = str(path)
    try:
        if not path.exists():
            raise unreadable(
                file, Rule.FILE_NOT_FOUND, "no such file; check the data path in site.toml"
            )
        if not path.is_file():
            raise unreadable(
                file, Rule.NOT_A_FILE, "is not a regular file (a folder?); name the data file"
            )
        reader = _FORMATS.get(path.suffix.lower())
        if reader is None:
            hint = layout.unsupported_hint.format(suffix=path.suffix)
            raise unreadable(file, Rule.UNSUPPORTED_FORMAT, hint)
        if path.stat().st_size == 0:
            raise unreadable(
                file, Rule.EMPTY_FILE, "the file is empty (0 bytes); export the data again"
            )
        return reader(path, file, layout)
    except PermissionError:
        raise unreadable(
            file, Rule.UNREADABLE, "permission denied; let fedcare's user read it"
        ) from None
    except OSError as error:
        raise unreadable(file, Rule.UNREADABLE, f"cannot be read ({error.strerror})") from None
