"""Read a hospital's CSV or Parquet file into checked columns, and say what is wrong with it.

What :mod:`client.site_table` (one row per patient) and
:mod:`client.sequence_files` (one row per patient per time step) share: reading
the file, with every file-level check (it exists, is ``.csv``, ``.parquet`` or
``.pq``, is not empty; CSV: UTF-8, comma-separated, well-formed, with data rows),
into the columns a loader asks for, each as numbers or as text; and the checks
on columns and cells that both loaders make. What a file must hold, and the
words its hints use, each loader says in a :class:`Layout`.

Every finding is a :class:`Problem` that names the file, the column, the rule
and how many rows (or lines, or patients) fail it, but never a value from the
file: hospital data is confidential and error messages travel into logs.

Cells are trimmed of surrounding spaces; an empty cell or ``NA``, ``NaN`` or
``null`` (any case) is a missing value.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedcare.shared.errors import DataError

MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
"""Cell texts (trimmed, any case) that mean "no value"."""

PANDAS_INDEX_HINT = "pandas wrote its index into the file; write it with index=False"
"""The hint for an unknown column that is pandas' index, written by mistake."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LIKELY_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


class Rule(StrEnum):
    """Every check a hospital's table or sequence file can fail, by its stable name.

    One list for both loaders, so that a failure they share has one name.
    """

    # Reading the file.
    FILE_NOT_FOUND = "file-not-found"
    NOT_A_FILE = "not-a-file"
    UNREADABLE = "unreadable"
    UNSUPPORTED_FORMAT = "unsupported-format"
    EMPTY_FILE = "empty-file"
    NOT_UTF8 = "not-utf8"
    NOT_COMMA_SEPARATED = "not-comma-separated"
    MALFORMED = "malformed-file"
    WRONG_FIELD_COUNT = "wrong-field-count"
    NO_DATA_ROWS = "no-data-rows"
    # Columns and cells.
    NO_HEADER = "no-header"
    MISSING_COLUMN = "missing-column"
    UNKNOWN_COLUMN = "unknown-column"
    DUPLICATE_COLUMN = "duplicate-column"
    WRONG_STORAGE_TYPE = "wrong-storage-type"
    MISSING_VALUE = "missing-value"
    NOT_A_NUMBER = "not-a-number"
    NOT_AN_INTEGER = "not-an-integer"
    NOT_FINITE = "not-finite"
    BELOW_MIN = "below-min"
    ABOVE_MAX = "above-max"
    UNKNOWN_CATEGORY = "unknown-category"
    UNKNOWN_CLASS = "unknown-class"
    # Time steps and labels of a patient's rows (sequence files).
    NOT_A_TIME_STEP = "not-a-time-step"
    NEGATIVE_TIME_STEP = "negative-time-step"
    DUPLICATE_TIME_STEP = "duplicate-time-step"
    INCONSISTENT_LABEL = "inconsistent-label"
    # Counts: of rows (tables), or of steps and patients (sequence files).
    TOO_FEW_ROWS = "too-few-rows"
    SINGLE_CLASS = "single-class"
    TOO_FEW_ROWS_IN_CLASS = "too-few-rows-in-class"
    TOO_SHORT = "too-short"
    TOO_FEW_PATIENTS = "too-few-patients"
    TOO_FEW_PATIENTS_IN_CLASS = "too-few-patients-in-class"


@dataclass(frozen=True)
class Problem:
    """One way a hospital file breaks what its loader expects; carries no value from the data.

    Attributes
    ----------
    file : str
        The file checked.
    column : str | None
        The column at fault, or ``None`` for the file as a whole.
    rule : Rule
        The check that failed.
    failing : int | None
        How many rows (or lines or patients, see ``unit``) fail it; ``None``
        when the rule is not about individual rows, lines or patients.
    hint : str
        What the rule requires and how to fix the file.
    unit : str
        What ``failing`` counts: ``"row"``, ``"line"`` or ``"patient"``.
    """

    file: str
    column: str | None
    rule: Rule
    failing: int | None
    hint: str
    unit: str = "row"

    def __str__(self) -> str:
        where = "file" if self.column is None else f"column '{self.column}'"
        count = "" if self.failing is None else f" in {plural(self.failing, self.unit)}"
        return f"{self.file}: {where}: {self.rule}{count}: {self.hint}"


def plural(count: int, unit: str) -> str:
    """Return ``count`` and ``unit``, plural unless ``count`` is 1 (``"2 rows"``)."""
    return f"{count} {unit}{'s' if count != 1 else ''}"


class _Located(Protocol):
    @property
    def file(self) -> str: ...


_P = TypeVar("_P", bound=_Located)


class FileCheckError(DataError, Generic[_P]):
    """A hospital file fails its loader's checks; ``problems`` lists every way it does.

    Each loader's error subclasses it, naming what the file must meet and what
    was not loaded.

    Parameters
    ----------
    problems : Sequence
        At least one problem (a :class:`Problem`, or the loader's own form of one),
        all about the same file.
    """

    _agreement: ClassVar[str]
    _loaded: ClassVar[str]

    def __init__(self, problems: Sequence[_P]) -> None:
        self.problems = list(problems)
        title = (
            f"{self.problems[0].file} does not meet the {self._agreement} "
            f"({plural(len(self.problems), 'problem')}); no {self._loaded} was loaded:"
        )
        super().__init__("\n".join([title, *(f"  {problem}" for problem in self.problems)]))


def problem_if(
    file: str, column: str, rule: Rule, failing: np.ndarray | int, hint: str, unit: str = "row"
) -> list[Problem]:
    """Return a problem counting the failing rows (or patients), or none when none fails.

    Parameters
    ----------
    file, column, rule, hint, unit
        As in :class:`Problem`.
    failing : numpy.ndarray | int
        A mask of the failing rows, or how many fail.

    Returns
    -------
    list[Problem]
        One problem, or none.
    """
    count = int(np.count_nonzero(failing)) if isinstance(failing, np.ndarray) else failing
    return [Problem(file, column, rule, count, hint, unit)] if count else []


# --- reading


class Kind(StrEnum):
    """How a column's cells are read: as numbers, or as text to match the agreed strings."""

    NUMBER = "number"
    TEXT = "text"


@dataclass(frozen=True, eq=False)
class Column:
    """One column's cells, ready for the rules.

    Attributes
    ----------
    missing : numpy.ndarray
        bool, per row: the cell is missing.
    values : numpy.ndarray
        float64 (number columns) or trimmed strings (text columns); entries
        where ``missing`` or ``unparseable`` hold nothing meaningful.
    unparseable : numpy.ndarray
        bool, per row: a present cell of a number column that is not a number.
    """

    missing: np.ndarray
    values: np.ndarray
    unparseable: np.ndarray


@dataclass(frozen=True)
class Layout:
    """What a loader expects of its file, and the words its hints use.

    Attributes
    ----------
    columns : tuple[str, ...]
        Every column the file must have, in order.
    kinds : Mapping[str, Kind]
        The columns that are read, and how; the others are only looked for.
    count_fields : bool
        Whether every CSV row must have as many fields as the header
        (``wrong-field-count``); if not, pandas fills a short row with missing cells.
    parquet_as_text : bool
        Whether a Parquet column of any number or string type is read through its
        text, so that every cell rule is the CSV one; if not, it must be stored as
        its kind (numbers; strings or integers for text).
    agreement : str
        What hints call the federation's agreement: ``"contract"`` or ``"spec"``.
    unsupported_hint : str
        The hint for a file that is not CSV or Parquet; ``{suffix}`` stands for its suffix.
    lines_as_rows : bool
        Whether the loader reports every count as rows, so that the hint for lines
        that are not UTF-8 says they are counted as rows.
    """

    columns: tuple[str, ...]
    kinds: Mapping[str, Kind]
    count_fields: bool
    parquet_as_text: bool
    agreement: str
    unsupported_hint: str
    lines_as_rows: bool


@dataclass(frozen=True)
class Table:
    """A file as read.

    Attributes
    ----------
    file : str
        The file, as its problems name it.
    layout : Layout
        What the loader expects of it.
    header : tuple[str, ...]
        Its column names as written (CSV: trimmed), repeats included.
    n_rows : int
        How many data rows it has.
    columns : Mapping[str, Column]
        The columns the layout reads that the file has, and could be read.
    problems : tuple[Problem, ...]
        Columns that could not be read (their Parquet storage type): reported with
        the other column problems, not raised here.
    """

    file: str
    layout: Layout
    header: tuple[str, ...]
    n_rows: int
    columns: Mapping[str, Column]
    problems: tuple[Problem, ...] = ()


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
    except _Unreadable as unreadable:
        raise error([unreadable.problem]) from None


class _Unreadable(Exception):
    """The file cannot be read far enough to check more; ``problem`` says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _unreadable(file: str, rule: Rule, hint: str, lines: int | None = None) -> _Unreadable:
    """Build the error for a file-level problem; what it counts are the file's lines."""
    return _Unreadable(Problem(file, None, rule, lines, hint, unit="line"))


def _read(path: Path, layout: Layout) -> Table:
    file = str(path)
    readers: dict[str, Callable[[Path, str, Layout], Table]] = {
        ".csv": _read_csv,
        ".parquet": _read_parquet,
        ".pq": _read_parquet,
    }
    try:
        if not path.exists():
            raise _unreadable(
                file, Rule.FILE_NOT_FOUND, "no such file; check the data path in site.toml"
            )
        if not path.is_file():
            raise _unreadable(
                file, Rule.NOT_A_FILE, "is not a regular file (a folder?); name the data file"
            )
        reader = readers.get(path.suffix.lower())
        if reader is None:
            hint = layout.unsupported_hint.format(suffix=path.suffix)
            raise _unreadable(file, Rule.UNSUPPORTED_FORMAT, hint)
        if path.stat().st_size == 0:
            raise _unreadable(
                file, Rule.EMPTY_FILE, "the file is empty (0 bytes); export the data again"
            )
        return reader(path, file, layout)
    except PermissionError:
        raise _unreadable(
            file, Rule.UNREADABLE, "permission denied; let fedcare's user read it"
        ) from None
    except OSError as error:
        raise _unreadable(file, Rule.UNREADABLE, f"cannot be read ({error.strerror})") from None


def _read_csv(path: Path, file: str, layout: Layout) -> Table:
    text = _decode(path.read_bytes(), file, layout)
    header = _csv_header(text, file, layout)
    try:
        # dtype=str and no default NA list: MISSING_TOKENS alone decide what is missing.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, ValueError):
        # Where field counts went unchecked, a row longer than the header is the likely cause.
        cause = "" if layout.count_fields else " (a row with more fields than the header?)"
        hint = f"pandas cannot parse it as CSV{cause}; export it again"
        raise _unreadable(file, Rule.MALFORMED, hint) from None
    if frame.shape[1] != len(header):
        raise _unreadable(
            file, Rule.MALFORMED, "its rows and header do not line up; export it again"
        )
    if len(frame) == 0:
        raise _unreadable(file, Rule.NO_DATA_ROWS, "the file has a header but no data rows")
    columns = {
        # By position: pandas renames a repeated header name, the raw header keeps it.
        name: _from_text(
            frame.iloc[:, header.index(name)].to_numpy(dtype=object, na_value=""), kind
        )
        for name, kind in layout.kinds.items()
        if name in header
    }
    return Table(file, layout, header, len(frame), columns)


def _decode(raw: bytes, file: str, layout: Layout) -> str:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark; still strict UTF-8.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        bad_lines = sum(1 for line in raw.split(b"\n") if not _is_utf8(line))
        counted = " (counted as rows)" if layout.lines_as_rows else ""
        hint = (
            f"the file must be UTF-8 and these lines are not{counted}; re-save it as UTF-8 "
            "(Excel: 'CSV UTF-8'; pandas: encoding='utf-8')"
        )
        raise _unreadable(file, Rule.NOT_UTF8, hint, bad_lines) from None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_header(text: str, file: str, layout: Layout) -> tuple[str, ...]:
    """Return the header (names trimmed) after checking the CSV's shape, never its values."""
    try:
        # Blank lines are skipped, as pandas does.
        rows = (row for row in csv.reader(io.StringIO(text)) if row)
        first = next(rows, None)
        if first is None:
            raise _unreadable(file, Rule.EMPTY_FILE, "the file holds no header and no rows")
        header = tuple(name.strip() for name in first)
        if len(header) == 1 and len(layout.columns) > 1:
            raise _not_comma_separated(file, first[0], layout)
        # Counting fields reads every row, so the quoting of every row is checked too.
        ragged = sum(1 for row in rows if len(row) != len(header)) if layout.count_fields else 0
    except csv.Error:
        raise _unreadable(
            file, Rule.MALFORMED, "not well-formed CSV (check quotes); export it again"
        ) from None
    if ragged:
        hint = (
            f"every row must have {len(header)} fields like the header; quote cells that "
            "contain commas, or export the file again"
        )
        raise _unreadable(file, Rule.WRONG_FIELD_COUNT, hint, ragged)
    return header


def _not_comma_separated(file: str, header: str, layout: Layout) -> _Unreadable:
    found = [name for separator, name in _LIKELY_SEPARATORS.items() if separator in header]
    seems = f"; it seems separated by {found[0]}" if found else ""
    return _unreadable(
        file,
        Rule.NOT_COMMA_SEPARATED,
        f"the file does not look comma-separated: its header is one column where the "
        f"{layout.agreement} expects {len(layout.columns)}{seems}; export it as CSV with ',' "
        "between columns",
    )


def _from_text(cells: np.ndarray, kind: Kind) -> Column:
    """Read text cells: trim them, mark missing ones, parse numbers for number columns."""
    text = pd.Series(cells, dtype=object).fillna("").astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool)
    if kind is Kind.TEXT:
        return Column(missing, text.to_numpy(dtype=object), np.zeros(len(text), dtype=bool))
    values = np.asarray(pd.to_numeric(text.mask(missing), errors="coerce"), dtype=np.float64)
    return Column(missing, values, ~missing & np.isnan(values))


def _read_parquet(path: Path, file: str, layout: Layout) -> Table:
    try:
        # ParquetFile, not read_table: the dataset reader refuses repeated column names.
        table = pq.ParquetFile(path).read()
    except (pa.ArrowException, ValueError):
        raise _unreadable(
            file, Rule.MALFORMED, "not a readable Parquet file; export it again"
        ) from None
    header = tuple(table.column_names)
    if table.num_rows == 0:
        raise _unreadable(file, Rule.NO_DATA_ROWS, "the file has columns but no rows")
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
    return _from_text(data.cast(pa.string()).to_numpy(zero_copy_only=False), kind)


def _is_number(stored: pa.DataType) -> bool:
    types = pa.types
    return types.is_integer(stored) or types.is_floating(stored) or types.is_decimal(stored)


def _is_string(stored: pa.DataType) -> bool:
    return pa.types.is_string(stored) or pa.types.is_large_string(stored)


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


# --- checks both loaders make


def duplicate_and_missing_columns(table: Table) -> list[Problem]:
    """Return a problem for each name the header repeats, then for each column it lacks.

    Parameters
    ----------
    table : Table
        The file as read.

    Returns
    -------
    list[Problem]
        ``duplicate-column`` and ``missing-column`` problems.
    """
    problems = [
        Problem(
            table.file,
            name,
            Rule.DUPLICATE_COLUMN,
            None,
            f"the header names it {count} times; keep one column of that name",
        )
        for name, count in Counter(table.header).items()
        if count > 1
    ]
    return problems + [
        _missing_column(table, name) for name in table.layout.columns if name not in table.header
    ]


def _missing_column(table: Table, name: str) -> Problem:
    agreement = table.layout.agreement
    close = [found for found in table.header if found.lower() == name.lower()]
    hint = (
        f"the file has '{close[0]}'; rename it"
        if close
        else f"add it, spelled as in the {agreement}"
    )
    return Problem(
        table.file, name, Rule.MISSING_COLUMN, None, f"the {agreement} requires this column; {hint}"
    )


def unknown_column(table: Table, position: int, name: str, hint: str) -> Problem:
    """Return the ``unknown-column`` problem of a header name, by position when it has none.

    Parameters
    ----------
    table : Table
        The file as read.
    position : int
        The column's place in the header, from 0.
    name : str
        Its name as written, possibly empty.
    hint : str
        Why an unknown column is refused and what to do (the loader's words).

    Returns
    -------
    Problem
        The problem.
    """
    column = name or f"#{position + 1} (no name)"
    return Problem(table.file, column, Rule.UNKNOWN_COLUMN, None, hint)


def finite_numbers(column: Column, usable: np.ndarray) -> np.ndarray:
    """Return which ``usable`` cells of a number column hold a number the model can take.

    Parameters
    ----------
    column : Column
        A number column.
    usable : numpy.ndarray
        bool, per row: the cells to look at (present, and kept).

    Returns
    -------
    numpy.ndarray
        bool, per row: a finite number within float32 range.
    """
    parsed = usable & ~column.unparseable
    # Too large for float32 counts as infinite: the model's inputs are float32.
    return parsed & np.isfinite(column.values) & (np.abs(column.values) <= _FLOAT32_MAX)


def number_problems(file: str, name: str, column: Column, usable: np.ndarray) -> list[Problem]:
    """Return the ``not-a-number`` and ``not-finite`` problems of a number column.

    Parameters
    ----------
    file : str
        The file checked.
    name : str
        The column.
    column : Column
        Its cells, read as numbers.
    usable : numpy.ndarray
        bool, per row: the cells to check (present, and kept).

    Returns
    -------
    list[Problem]
        Up to two problems, each counting its rows.
    """
    parsed = usable & ~column.unparseable
    return [
        *problem_if(
            file,
            name,
            Rule.NOT_A_NUMBER,
            usable & column.unparseable,
            "cells must be plain numbers with '.' as decimal point (no units, no text)",
        ),
        *problem_if(
            file,
            name,
            Rule.NOT_FINITE,
            parsed & ~finite_numbers(column, usable),
            "cells must be finite numbers within float32 range (no inf, -inf)",
        ),
    ]


def unknown_class_problems(
    file: str, name: str, labels: Column, usable: np.ndarray, classes: Sequence[str], agreement: str
) -> list[Problem]:
    """Return the ``unknown-class`` problem of a label column, or none.

    Parameters
    ----------
    file : str
        The file checked.
    name : str
        The label column.
    labels : Column
        Its cells, read as text.
    usable : numpy.ndarray
        bool, per row: the cells to check (present, and kept).
    classes : Sequence[str]
        The agreed class strings, compared exactly.
    agreement : str
        What the hint calls the federation's agreement.

    Returns
    -------
    list[Problem]
        One problem counting the rows whose label is no class, or none.
    """
    known = pd.Series(labels.values).isin(classes).to_numpy(dtype=bool)
    return problem_if(
        file,
        name,
        Rule.UNKNOWN_CLASS,
        usable & ~known,
        f"labels must be one of the {agreement}'s classes ({', '.join(classes)}), exact "
        "spelling and case; recode those rows",
    )


def header_absent(table: Table) -> list[Problem]:
    """Return the ``no-header`` problem when none of the expected columns is in the header.

    The first row is then most likely data, so none of it is echoed back: a
    problem naming "unknown columns" would print patient values.
    """
    expected = table.layout.columns
    if set(table.header) & set(expected):
        return []
    agreement = table.layout.agreement
    hint = (
        f"none of the {agreement}'s {len(expected)} columns is in the file; its first row "
        f"must name the columns (a header), spelled as in the {agreement}"
    )
    return [Problem(table.file, None, Rule.NO_HEADER, None, hint)]
