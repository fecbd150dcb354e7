"""Read a hospital's Parquet file, column by column as its storage type allows.

A reader chooses in its :class:`client.readers.columns.Layout` whether a column
of any number or string type is read through its text (the CSV rules, cell by
cell) or must be stored as its kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcare.client.readers.columns import Column, Kind, Layout, Table, text_column, unreadable
from fedcare.client.readers.problems import Problem, Rule


def read_parquet(path: Path, file: str, layout: Layout) -> Table:
    """Read a Parquet file's header, row count and the columns ``layout`` asks for.

    A column stored with a type its kind cannot be read from is not raised but
    left in :attr:`Table.problems`, to be reported with the other column problems.

    Raises
    ------
    Unreadable
        If the file is not Parquet or has no rows.
    """
    try:
        # ParquetFile, not read_table: the dataset reader refuses repeated column names.
        table = pq.ParquetFile(path).read()
    except (pa.ArrowException, ValueError):
        raise unreadable(
            file, Rule.MALFORMED, "not a readable Parquet file; export it again"
        ) from None
    header = tuple(table.column_names)
    if table.num_rows == 0:
        raise unreadable(file, Rule.NO_DATA_ROWS, "the file has columns but no rows")
    columns: dict[str, Column] = {}
    problems = []
    for name, kind in layout.kinds.items():
        if name not in header:
            continue
        data = table.column(header.index(name))
        column = _parquet_column(data, kind, layout.parquet_as_text)
        if column is None:
            problems.append(_storage_problem(file, name, data.type, kind, layout))
        else:
            columns[name] = column
    return Table(file, layout, header, table.num_rows, columns, tuple(problems))


def _parquet_column(data: pa.ChunkedArray, kind: Kind, as_text: bool) -> Column | None:
    """Read a Parquet column as ``kind``, or ``None`` when its storage type cannot be."""
    if pa.types.is_dictionary(data.type):
        data = data.cast(data.type.value_type)
    if pa.types.is_null(data.type):
        nothing = np.ones(len(data), dtype=bool)
        return Column(nothing, np.full(len(data), np.nan), np.zeros(len(data), dtype=bool))
    if as_text:
        # Arrow writes floats in their shortest round-trip form, so no precision is lost.
        readable = _is_number(data.type) or _is_string(data.type)
    elif kind is Kind.NUMBER:
        if not _is_number(data.type):
            return None
        # Nulls become NaN, and a NaN is a missing value as in pandas.
        values = np.asarray(
            data.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        return Column(np.isnan(values), values, np.zeros(len(values), dtype=bool))
    else:
        # Integer labels and categories match the agreed strings as decimal text ("0", "1").
        readable = _is_string(data.type) or pa.types.is_integer(data.type)
    if not readable:
        return None
    return text_column(data.cast(pa.string()).to_numpy(zero_copy_only=False), kind)


def _is_number(stored: pa.DataType) -> bool:
    types = pa.types
    return bool(types.is_integer(stored) or types.is_floating(stored) or types.is_decimal(stored))


def _is_string(stored: pa.DataType) -> bool:
    return bool(pa.types.is_string(stored) or pa.types.is_large_string(stored))


def _storage_problem(
    file: str, name: str, stored: pa.DataType, kind: Kind, layout: Layout
) -> Problem:
    if layout.parquet_as_text:
        wanted = "a number or string"
    else:
        wanted = "a float or integer" if kind is Kind.NUMBER else "a string (or integer)"
    return Problem(
        file,
        name,
        Rule.WRONG_STORAGE_TYPE,
        None,
        f"stored as {stored}, but the {layout.agreement} needs {wanted} column; convert the "
        "column before writing the Parquet file",
    )
