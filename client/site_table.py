"""A hospital's own table: read its CSV or Parquet file and hold it to the data contract.

The checks run in three stages, each only once the one before has passed,
because a later stage means nothing on a file that failed an earlier one:

1. the file: it exists, is ``.csv``, ``.parquet`` or ``.pq``, is not empty, and
   (CSV) is UTF-8, comma-separated, well-formed and has data rows;
2. columns and cells: every contract column present exactly once, no column the
   contract does not know, Parquet columns stored with a usable type, and every
   feature and label cell valid (missing, number, integer, finite, range,
   category, class);
3. rows: enough usable rows in all, and of every class.

Within a stage every problem is collected and all are raised together in one
:class:`DataValidationError`. Its message names the file, the column, the rule
and how many rows fail, but never a value from the data, not even an unknown
category: hospital data is confidential and error messages travel into logs.

Cells are trimmed of surrounding spaces; an empty cell or ``NA``, ``NaN`` or
``null`` (any case) is a missing value. Labels and categories are compared
exactly (case-sensitive) with the contract's strings. Duplicate rows are
allowed: two patients may well share every recorded value, and dropping them
would bias the data.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.contract import DataContract, Feature, FeatureType, MissingPolicy
from shared.data import Examples
from shared.errors import DataError
from shared.tasks import TaskKind

MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
"""Cell texts (trimmed, any case) that mean "no value"."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LIKELY_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


class Rule(StrEnum):
    """Every check a hospital file can fail, by its stable name."""

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
    TOO_FEW_ROWS = "too-few-rows"
    SINGLE_CLASS = "single-class"
    TOO_FEW_ROWS_IN_CLASS = "too-few-rows-in-class"


@dataclass(frozen=True)
class Problem:
    """One way a hospital file breaks its contract; carries no value from the data.

    Attributes
    ----------
    file : str
        The file checked.
    column : str | None
        The column at fault, or ``None`` for the file as a whole.
    rule : Rule
        The check that failed.
    rows_failing : int | None
        How many rows (for ``not-utf8``: lines) fail it; ``None`` when the rule
        is not about individual rows.
    hint : str
        What the rule requires and how to fix the file.
    """

    file: str
    column: str | None
    rule: Rule
    rows_failing: int | None
    hint: str

    def __str__(self) -> str:
        where = "file" if self.column is None else f"column '{self.column}'"
        rows = "" if self.rows_failing is None else f" in {_rows(self.rows_failing)}"
        return f"{self.file}: {where}: {self.rule}{rows}: {self.hint}"


class DataValidationError(DataError):
    """A hospital file breaks its data contract; ``problems`` lists every way it does.

    Parameters
    ----------
    problems : Sequence[Problem]
        At least one problem, all about the same file.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        title = (
            f"{self.problems[0].file} does not meet the data contract "
            f"({count} problem{'s' if count != 1 else ''}); no row was loaded:"
        )
        super().__init__("\n".join([title, *(f"  {problem}" for problem in self.problems)]))


def load_site_table(path: Path, contract: DataContract) -> Examples:
    """Read a hospital's CSV or Parquet file, check it against ``contract`` and encode it.

    Parameters
    ----------
    path : Path
        The file; its suffix (``.csv``, ``.parquet`` or ``.pq``) picks the reader.
    contract : DataContract
        The federation's data contract.

    Returns
    -------

    Examples
    --------
        Features ``(n, d)`` float32 in ``contract.feature_names()`` order (category
        features one-hot); labels float32 0/1 for binary (1 = the positive class),
        int64 class indices in ``contract.classes`` order for multiclass, float32
        for regression. Under ``missing = "drop-rows"`` rows with a missing
        feature or label are left out; duplicate rows are kept.

    Raises
    ------
    DataValidationError
        Listing every problem of the failing stage (see the module docstring).
    """
    file = str(path)
    table = _read(path, file, contract)
    problems = [*table.problems, *_header_problems(table, contract, file)]
    kept = _kept_rows(table, contract)
    problems += _cell_problems(table, contract, kept, file)
    _raise_if_any(problems)
    _raise_if_any(_row_problems(table, contract, kept, file))
    return _encode(table, contract, kept)


def _rows(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''}"


def _raise_if_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise DataValidationError(problems)


def _fail(file: str, rule: Rule, hint: str, rows: int | None = None) -> DataValidationError:
    """Build a file-level error: the file cannot be read far enough to check more."""
    return DataValidationError([Problem(file, None, rule, rows, hint)])


# --- reading


class _Kind(StrEnum):
    """How a column's cells are read: as numbers, or as text to match the contract's strings."""

    NUMERIC = "numeric"
    TEXT = "text"


@dataclass(frozen=True, eq=False)
class _Column:
    """One feature or label column's cells, ready for the rules.

    ``values`` holds float64 (numeric columns) or trimmed strings (text columns);
    entries where ``missing`` or ``unparseable`` hold nothing meaningful.
    """

    missing: np.ndarray
    values: np.ndarray
    unparseable: np.ndarray


@dataclass(frozen=True)
class _Table:
    """A file as read: its column names as written, and its feature and label columns."""

    header: tuple[str, ...]
    n_rows: int
    columns: Mapping[str, _Column]
    problems: tuple[Problem, ...] = ()


def _contract_columns(contract: DataContract) -> tuple[str, ...]:
    """Every column the file must have: ids, features, then the label."""
    return (*contract.id_columns, *(spec.name for spec in contract.features), contract.label)


def _kinds(contract: DataContract) -> dict[str, _Kind]:
    """How each feature and label column is read (id columns are never read)."""
    kinds = {
        spec.name: _Kind.TEXT if spec.type is FeatureType.CATEGORY else _Kind.NUMERIC
        for spec in contract.features
    }
    regression = contract.task_kind is TaskKind.REGRESSION
    kinds[contract.label] = _Kind.NUMERIC if regression else _Kind.TEXT
    return kinds


def _read(path: Path, file: str, contract: DataContract) -> _Table:
    """Check the file can be read and read it; raise on any file-level problem."""
    readers: dict[str, Callable[[Path, str, DataContract], _Table]] = {
        ".csv": _read_csv,
        ".parquet": _read_parquet,
        ".pq": _read_parquet,
    }
    try:
        if not path.exists():
            raise _fail(file, Rule.FILE_NOT_FOUND, "no such file; check the data path in site.toml")
        if not path.is_file():
            raise _fail(
                file, Rule.NOT_A_FILE, "is not a regular file (a folder?); name the data file"
            )
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise _fail(
                file,
                Rule.UNSUPPORTED_FORMAT,
                f"fedcare reads .csv, .parquet and .pq files, not '{path.suffix}'; "
                "export the data as CSV (UTF-8, comma-separated) or Parquet",
            )
        if path.stat().st_size == 0:
            raise _fail(file, Rule.EMPTY_FILE, "the file is empty (0 bytes); export the data again")
        return reader(path, file, contract)
    except PermissionError:
        raise _fail(
            file, Rule.UNREADABLE, "permission denied; let fedcare's user read it"
        ) from None
    except OSError as error:
        raise _fail(file, Rule.UNREADABLE, f"cannot be read ({error.strerror})") from None


def _read_csv(path: Path, file: str, contract: DataContract) -> _Table:
    text = _decode(path.read_bytes(), file)
    header = _csv_header(text, file, len(_contract_columns(contract)))
    try:
        # dtype=str and no default NA list: this module alone decides what is missing.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, ValueError):
        raise _fail(
            file, Rule.MALFORMED, "pandas cannot parse it as CSV; export it again"
        ) from None
    if frame.shape[1] != len(header):
        raise _fail(file, Rule.MALFORMED, "its rows and header do not line up; export it again")
    columns = {
        # By position: pandas renames a repeated header name, the raw header keeps it.
        name: _from_text(
            frame.iloc[:, header.index(name)].to_numpy(dtype=object, na_value=""), kind
        )
        for name, kind in _kinds(contract).items()
        if name in header
    }
    return _Table(header=header, n_rows=len(frame), columns=columns)


def _decode(raw: bytes, file: str) -> str:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark; still strict UTF-8.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        bad_lines = sum(1 for line in raw.split(b"\n") if not _is_utf8(line))
        raise _fail(
            file,
            Rule.NOT_UTF8,
            "the file must be UTF-8 and these lines are not (counted as rows); re-save it as "
            "UTF-8 (Excel: 'CSV UTF-8'; pandas: encoding='utf-8')",
            rows=bad_lines,
        ) from None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_header(text: str, file: str, expected_columns: int) -> tuple[str, ...]:
    """Return the header (names trimmed) after checking the CSV's shape, never its values."""
    try:
        # Blank lines are skipped, as pandas does.
        rows = (row for row in csv.reader(io.StringIO(text)) if row)
        first = next(rows, None)
        if first is None:
            raise _fail(file, Rule.EMPTY_FILE, "the file holds no header and no rows")
        header = tuple(name.strip() for name in first)
        if len(header) == 1 and expected_columns > 1:
            raise _not_comma_separated(file, first[0], expected_columns)
        lengths = [len(row) for row in rows]
    except csv.Error:
        raise _fail(
            file, Rule.MALFORMED, "not well-formed CSV (check quotes); export it again"
        ) from None
    ragged = sum(1 for length in lengths if length != len(header))
    if ragged:
        raise _fail(
            file,
            Rule.WRONG_FIELD_COUNT,
            f"every row must have {len(header)} fields like the header; quote cells that "
            "contain commas, or export the file again",
            rows=ragged,
        )
    if not lengths:
        raise _fail(file, Rule.NO_DATA_ROWS, "the file has a header but no data rows")
    return header


def _not_comma_separated(file: str, header: str, expected_columns: int) -> DataValidationError:
    found = [name for separator, name in _LIKELY_SEPARATORS.items() if separator in header]
    seems = f"; it seems separated by {found[0]}" if found else ""
    return _fail(
        file,
        Rule.NOT_COMMA_SEPARATED,
        f"the file does not look comma-separated: its header is one column where the contract "
        f"expects {expected_columns}{seems}; export it as CSV with ',' between columns",
    )


def _from_text(cells: np.ndarray, kind: _Kind) -> _Column:
    """Read text cells: trim them, mark missing ones, parse numbers for numeric columns."""
    text = pd.Series(cells, dtype=object).fillna("").astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool)
    if kind is _Kind.TEXT:
        return _Column(missing, text.to_numpy(dtype=object), np.zeros(len(text), dtype=bool))
    values = np.asarray(pd.to_numeric(text.mask(missing), errors="coerce"), dtype=np.float64)
    return _Column(missing, values, ~missing & np.isnan(values))


def _read_parquet(path: Path, file: str, contract: DataContract) -> _Table:
    try:
        # ParquetFile, not read_table: the dataset reader refuses repeated column names.
        table = pq.ParquetFile(path).read()
    except (pa.ArrowException, ValueError):
        raise _fail(file, Rule.MALFORMED, "not a readable Parquet file; export it again") from None
    header = tuple(table.column_names)
    if table.num_rows == 0:
        raise _fail(file, Rule.NO_DATA_ROWS, "the file has columns but no rows")
    columns: dict[str, _Column] = {}
    problems = []
    for name, kind in _kinds(contract).items():
        if name not in header:
            continue
        data = table.column(header.index(name))
        column = _parquet_column(data, kind)
        if column is None:
            problems.append(_storage_problem(file, name, data.type, kind))
        else:
            columns[name] = column
    return _Table(header=header, n_rows=table.num_rows, columns=columns, problems=tuple(problems))


def _parquet_column(data: pa.ChunkedArray, kind: _Kind) -> _Column | None:
    """Read a Parquet column as ``kind``, or ``None`` when its storage type cannot be."""
    types = pa.types
    if types.is_dictionary(data.type):
        data = data.cast(data.type.value_type)
    if types.is_null(data.type):
        nothing = np.ones(len(data), dtype=bool)
        return _Column(nothing, np.full(len(data), np.nan), np.zeros(len(data), dtype=bool))
    numeric = (
        types.is_integer(data.type) or types.is_floating(data.type) or types.is_decimal(data.type)
    )
    if kind is _Kind.NUMERIC and numeric:
        # Nulls become NaN, and a NaN is a missing value as in pandas.
        values = np.asarray(
            data.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        missing = np.isnan(values)
        return _Column(missing, values, np.zeros(len(values), dtype=bool))
    textual = types.is_string(data.type) or types.is_large_string(data.type)
    if kind is _Kind.TEXT and (textual or types.is_integer(data.type)):
        # Integer labels and categories match the contract's strings as decimal text ("0", "1").
        return _from_text(data.cast(pa.string()).to_numpy(zero_copy_only=False), kind)
    return None


def _storage_problem(file: str, name: str, stored: pa.DataType, kind: _Kind) -> Problem:
    wanted = "a float or integer" if kind is _Kind.NUMERIC else "a string (or integer)"
    return Problem(
        file,
        name,
        Rule.WRONG_STORAGE_TYPE,
        None,
        f"stored as {stored}, but the contract needs {wanted} column; convert the column "
        "before writing the Parquet file",
    )


# --- checking


def _header_problems(table: _Table, contract: DataContract, file: str) -> list[Problem]:
    expected = _contract_columns(contract)
    present = set(table.header)
    if not present & set(expected):
        # Likely no header at all: the first row would be data, so none of it is echoed.
        hint = (
            f"none of the contract's {len(expected)} columns is in the file; its first row "
            "must name the columns (a header), spelled as in the contract"
        )
        return [Problem(file, None, Rule.NO_HEADER, None, hint)]
    problems = [
        Problem(
            file,
            name,
            Rule.DUPLICATE_COLUMN,
            None,
            f"the header names it {count} times; keep one column of that name",
        )
        for name, count in Counter(table.header).items()
        if count > 1
    ]
    problems += [
        _missing_column(file, name, table.header) for name in expected if name not in present
    ]
    unknown = dict.fromkeys(
        (position, name) for position, name in enumerate(table.header) if name not in expected
    )
    problems += [_unknown_column(file, position, name) for position, name in unknown]
    return problems


def _missing_column(file: str, name: str, header: tuple[str, ...]) -> Problem:
    close = [found for found in header if found.lower() == name.lower()]
    hint = (
        f"the file has '{close[0]}'; rename it" if close else "add it, spelled as in the contract"
    )
    return Problem(
        file, name, Rule.MISSING_COLUMN, None, f"the contract requires this column; {hint}"
    )


def _unknown_column(file: str, position: int, name: str) -> Problem:
    if name.startswith("__index_level_"):
        hint = "pandas wrote its index into the file; write it with index=False"
    else:
        hint = (
            "the contract does not list it, and an unknown column could carry identifiers into "
            "training; add it to the contract's id_columns if it identifies patients or sites, "
            "or remove it from the file"
        )
    return Problem(file, name or f"#{position + 1} (no name)", Rule.UNKNOWN_COLUMN, None, hint)


def _kept_rows(table: _Table, contract: DataContract) -> np.ndarray:
    """Rows that are used: all of them, or under drop-rows those with no missing cell."""
    kept = np.ones(table.n_rows, dtype=bool)
    if contract.missing is MissingPolicy.DROP_ROWS:
        for column in table.columns.values():
            kept &= ~column.missing
    return kept


def _cell_problems(
    table: _Table, contract: DataContract, kept: np.ndarray, file: str
) -> list[Problem]:
    problems: list[Problem] = []
    for spec in contract.features:
        column = table.columns.get(spec.name)
        if column is not None:
            problems += _missing_problems(file, spec.name, column, contract.missing)
            problems += _feature_problems(file, spec, column, kept)
    label = table.columns.get(contract.label)
    if label is not None:
        problems += _missing_problems(file, contract.label, label, contract.missing)
        problems += _label_problems(file, contract, label, kept)
    return problems


def _problem_if(
    file: str, column: str, rule: Rule, failing: np.ndarray, hint: str
) -> list[Problem]:
    """Return a problem counting the ``failing`` rows, or none when no row fails."""
    count = int(np.count_nonzero(failing))
    return [Problem(file, column, rule, count, hint)] if count else []


def _missing_problems(
    file: str, name: str, column: _Column, policy: MissingPolicy
) -> list[Problem]:
    if policy is MissingPolicy.DROP_ROWS:
        return []
    return _problem_if(
        file,
        name,
        Rule.MISSING_VALUE,
        column.missing,
        "the contract rejects empty cells (and NA, NaN, null); fill them or remove those rows, "
        'or the federation may choose missing = "drop-rows" in the contract',
    )


def _feature_problems(file: str, spec: Feature, column: _Column, kept: np.ndarray) -> list[Problem]:
    usable = kept & ~column.missing
    if spec.type is FeatureType.CATEGORY:
        allowed = pd.Series(column.values).isin(spec.categories).to_numpy(dtype=bool)
        return _problem_if(
            file,
            spec.name,
            Rule.UNKNOWN_CATEGORY,
            usable & ~allowed,
            f"values must be one of {', '.join(spec.categories)} (exact spelling and case); "
            "recode those cells",
        )
    return _number_problems(
        file,
        spec.name,
        column,
        usable,
        integer=spec.type is FeatureType.INT,
        low=spec.minimum,
        high=spec.maximum,
    )


def _number_problems(
    file: str,
    name: str,
    column: _Column,
    usable: np.ndarray,
    *,
    integer: bool,
    low: float | None = None,
    high: float | None = None,
) -> list[Problem]:
    values = column.values
    parsed = usable & ~column.unparseable
    # Too large for float32 counts as infinite: the model's inputs are float32.
    finite = parsed & np.isfinite(values) & (np.abs(values) <= _FLOAT32_MAX)
    checks = [
        (
            Rule.NOT_A_NUMBER,
            usable & column.unparseable,
            "cells must be plain numbers with '.' as decimal point (no units, no text)",
        ),
        (
            Rule.NOT_FINITE,
            parsed & ~finite,
            "cells must be finite numbers within float32 range (no inf, -inf)",
        ),
        (
            Rule.NOT_AN_INTEGER,
            finite & (values != np.round(values)) if integer else None,
            "the contract declares whole numbers; round or recode those cells",
        ),
        (
            Rule.BELOW_MIN,
            finite & (values < low) if low is not None else None,
            f"values must be >= {low} (the contract's min); correct them, or widen the range in "
            "the contract if they are genuine",
        ),
        (
            Rule.ABOVE_MAX,
            finite & (values > high) if high is not None else None,
            f"values must be <= {high} (the contract's max); correct them, or widen the range in "
            "the contract if they are genuine",
        ),
    ]
    return [
        problem
        for rule, failing, hint in checks
        if failing is not None
        for problem in _problem_if(file, name, rule, failing, hint)
    ]


def _label_problems(
    file: str, contract: DataContract, label: _Column, kept: np.ndarray
) -> list[Problem]:
    usable = kept & ~label.missing
    if contract.task_kind is TaskKind.REGRESSION:
        return _number_problems(file, contract.label, label, usable, integer=False)
    known = pd.Series(label.values).isin(contract.classes).to_numpy(dtype=bool)
    return _problem_if(
        file,
        contract.label,
        Rule.UNKNOWN_CLASS,
        usable & ~known,
        f"labels must be one of the contract's classes ({', '.join(contract.classes)}), "
        "exact spelling and case; recode those rows",
    )


def _row_problems(
    table: _Table, contract: DataContract, kept: np.ndarray, file: str
) -> list[Problem]:
    usable = int(np.count_nonzero(kept))
    problems = []
    if usable < contract.min_rows:
        dropped = table.n_rows - usable
        why = f" ({dropped} dropped for missing values)" if dropped else ""
        problems.append(
            Problem(
                file,
                None,
                Rule.TOO_FEW_ROWS,
                None,
                f"{_rows(usable)} usable{why}; the contract needs at least {contract.min_rows}",
            )
        )
    classification = contract.task_kind is not TaskKind.REGRESSION
    if classification and usable and contract.min_rows_per_class > 0:
        problems += _class_problems(file, contract, table.columns[contract.label].values[kept])
    return problems


def _class_problems(file: str, contract: DataContract, labels: np.ndarray) -> list[Problem]:
    counts = {name: int(np.count_nonzero(labels == name)) for name in contract.classes}
    if sum(1 for count in counts.values() if count) == 1:
        hint = (
            "every usable row has the same class; the contract needs "
            f"{contract.min_rows_per_class} or more rows of each class "
            f"({', '.join(contract.classes)})"
        )
        return [Problem(file, contract.label, Rule.SINGLE_CLASS, None, hint)]
    return [
        Problem(
            file,
            contract.label,
            Rule.TOO_FEW_ROWS_IN_CLASS,
            None,
            f"class '{name}' has {_rows(count)}; the contract needs at least "
            f"{contract.min_rows_per_class} of every class",
        )
        for name, count in counts.items()
        if count < contract.min_rows_per_class
    ]


# --- encoding


def _encode(table: _Table, contract: DataContract, kept: np.ndarray) -> Examples:
    """Turn a valid table's kept rows into model inputs and labels."""
    blocks = []
    for spec in contract.features:
        values = table.columns[spec.name].values[kept]
        if spec.type is FeatureType.CATEGORY:
            blocks.append(np.stack([values == value for value in spec.categories], axis=1))
        else:
            blocks.append(values[:, np.newaxis])
    features = np.concatenate(blocks, axis=1).astype(np.float32)
    labels = _encode_labels(contract, table.columns[contract.label].values[kept])
    return Examples(features=features, labels=labels, feature_names=contract.feature_names())


def _encode_labels(contract: DataContract, values: np.ndarray) -> np.ndarray:
    if contract.task_kind is TaskKind.BINARY:
        return (values == contract.positive_class).astype(np.float32)
    if contract.task_kind is TaskKind.MULTICLASS:
        index = {name: position for position, name in enumerate(contract.classes)}
        return np.fromiter((index[value] for value in values), dtype=np.int64, count=len(values))
    return values.astype(np.float32)
