"""A hospital's per-patient time series: read its long-format file and hold it to the contract.

A sequence file has one row per patient per time step: a patient id column, an
integer time step column, the feature columns and the patient's label repeated
on each of its rows. It is checked in three stages, each only once the one
before has passed, because a later stage means nothing on a file that failed an
earlier one (as in :mod:`client.site_table`):

1. the file: it exists, is ``.csv``, ``.parquet`` or ``.pq``, is not empty and
   can be parsed (CSV: UTF-8, comma-separated, with data rows);
2. columns, cells and patients: every spec column present exactly once and no
   other; no missing cell; features finite numbers; time steps whole numbers,
   not negative and not repeated within a patient; one label per patient, and
   one of the spec's classes;
3. counts: every patient has enough steps, and there are enough patients in all
   and of every class.

Within a stage every problem is collected and all are raised together in one
:class:`SequenceFileError`. Its message names the file, the column, the rule and
how many rows or patients fail it, but never a value from the file and never a
patient id: hospital data is confidential and error messages travel into logs.
The patient id groups rows and is then dropped; it never reaches the model.

Cells are trimmed of surrounding spaces; an empty cell or ``NA``, ``NaN`` or
``null`` (any case) is missing, as in :mod:`client.site_table`. Labels are
compared exactly (case-sensitive) with the spec's class strings; integer
Parquet labels match them as decimal text (``0`` matches ``"0"``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.errors import DataError
from shared.sequences import to_padded

MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
"""Cell texts (trimmed, any case) that mean "no value"; the same as for tabular files."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LIKELY_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


class SequenceSpecError(DataError):
    """A :class:`SequenceSpec` is inconsistent; the message names the field and the fix."""


@dataclass(frozen=True)
class SequenceSpec:
    """What a hospital's sequence file must look like, agreed by the federation.

    Attributes
    ----------
    id_column : str
        Column identifying the patient (grouping only, never a feature).
    time_column : str
        Column of whole, non-negative time step numbers, unique within a patient.
    label : str
        Column of the patient's label, the same on each of its rows.
    features : tuple[str, ...]
        Numeric input columns, in channel order.
    classes : tuple[str, ...]
        Label values as written in the file; a class's index is its position.
    max_length : int
        Steps kept per patient (the most recent); shorter sequences are padded.
    min_length : int
        Fewest steps a patient may have.
    min_patients : int
        Fewest patients the file may hold.
    min_patients_per_class : int
        Fewest patients of each class.
    """

    id_column: str
    time_column: str
    label: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    max_length: int
    min_length: int = 1
    min_patients: int = 20
    min_patients_per_class: int = 1

    def __post_init__(self) -> None:
        _check_names(self)
        _check_classes(self.classes)
        _check_counts(self)

    def columns(self) -> tuple[str, ...]:
        """Every column the file must have: id, time, features, then the label."""
        return (self.id_column, self.time_column, *self.features, self.label)


def _check_names(spec: SequenceSpec) -> None:
    if not isinstance(spec.features, tuple) or not spec.features:
        raise SequenceSpecError("field 'features': list at least one feature column, as a tuple")
    names = spec.columns()
    if any(not isinstance(name, str) or not name.strip() for name in names):
        raise SequenceSpecError(
            "fields 'id_column', 'time_column', 'label', 'features': every column name must be "
            "a non-empty string"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SequenceSpecError(
            f"column names {', '.join(repeated)} are given more than one role; the id, time, "
            "label and feature columns must all differ"
        )


def _check_classes(classes: tuple[str, ...]) -> None:
    if not isinstance(classes, tuple) or len(classes) < 2:
        raise SequenceSpecError("field 'classes': list at least two label values, as a tuple")
    if any(not isinstance(name, str) or not name for name in classes):
        raise SequenceSpecError("field 'classes': every class must be a non-empty string")
    if len(set(classes)) != len(classes):
        raise SequenceSpecError("field 'classes': every class must be listed once")


def _check_counts(spec: SequenceSpec) -> None:
    minimums = {
        "max_length": (spec.max_length, 1),
        "min_length": (spec.min_length, 1),
        "min_patients": (spec.min_patients, 1),
        "min_patients_per_class": (spec.min_patients_per_class, 0),
    }
    for field, (value, lowest) in minimums.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise SequenceSpecError(f"field '{field}': must be a whole number >= {lowest}")


class Rule(StrEnum):
    """Every check a sequence file can fail, by its stable name."""

    FILE_NOT_FOUND = "file-not-found"
    NOT_A_FILE = "not-a-file"
    UNREADABLE = "unreadable"
    UNSUPPORTED_FORMAT = "unsupported-format"
    EMPTY_FILE = "empty-file"
    NOT_UTF8 = "not-utf8"
    NOT_COMMA_SEPARATED = "not-comma-separated"
    MALFORMED = "malformed-file"
    NO_DATA_ROWS = "no-data-rows"
    MISSING_COLUMN = "missing-column"
    UNKNOWN_COLUMN = "unknown-column"
    DUPLICATE_COLUMN = "duplicate-column"
    WRONG_STORAGE_TYPE = "wrong-storage-type"
    MISSING_VALUE = "missing-value"
    NOT_A_NUMBER = "not-a-number"
    NOT_FINITE = "not-finite"
    NOT_A_TIME_STEP = "not-a-time-step"
    NEGATIVE_TIME_STEP = "negative-time-step"
    DUPLICATE_TIME_STEP = "duplicate-time-step"
    INCONSISTENT_LABEL = "inconsistent-label"
    UNKNOWN_CLASS = "unknown-class"
    TOO_SHORT = "too-short"
    TOO_FEW_PATIENTS = "too-few-patients"
    TOO_FEW_PATIENTS_IN_CLASS = "too-few-patients-in-class"


@dataclass(frozen=True)
class Problem:
    """One way a sequence file breaks its spec; carries no value from the data.

    Attributes
    ----------
    file : str
        The file checked.
    column : str | None
        The column at fault, or ``None`` for the file as a whole.
    rule : Rule
        The check that failed.
    failing : int | None
        How many rows (or patients, see ``unit``) fail it; ``None`` when the
        rule is not about individual rows or patients.
    unit : str
        What ``failing`` counts: ``"row"``, ``"line"`` or ``"patient"``.
    hint : str
        What the rule requires and how to fix the file.
    """

    file: str
    column: str | None
    rule: Rule
    failing: int | None
    hint: str
    unit: str = "row"

    def __str__(self) -> str:
        where = "file" if self.column is None else f"column '{self.column}'"
        count = "" if self.failing is None else f" in {_count(self.failing, self.unit)}"
        return f"{self.file}: {where}: {self.rule}{count}: {self.hint}"


class SequenceFileError(DataError):
    """A hospital's sequence file breaks its spec; ``problems`` lists every way it does.

    Parameters
    ----------
    problems : Sequence[Problem]
        At least one problem, all about the same file.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        title = (
            f"{self.problems[0].file} does not meet the sequence contract "
            f"({count} problem{'s' if count != 1 else ''}); no patient was loaded:"
        )
        super().__init__("\n".join([title, *(f"  {problem}" for problem in self.problems)]))


def load_sequence_file(path: Path, spec: SequenceSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read a hospital's long-format CSV or Parquet file, check it and pad its sequences.

    Parameters
    ----------
    path : Path
        The file; its suffix (``.csv``, ``.parquet`` or ``.pq``) picks the reader.
    spec : SequenceSpec
        The federation's sequence contract.

    Returns
    -------
    inputs : numpy.ndarray
        float32 ``(n_patients, spec.max_length, len(spec.features) + 1)``, as
        :func:`shared.sequences.to_padded` builds it (last channel: the mask).
    labels : numpy.ndarray
        int64 ``(n_patients,)``, each patient's class index in ``spec.classes``.
        Patients are in the sorted order of their ids; the ids are not returned.

    Raises
    ------
    SequenceFileError
        Listing every problem of the failing stage (see the module docstring).
    """
    file = str(path)
    table = _read(path, file, spec)
    problems = [*table.problems, *_header_problems(table.header, spec, file)]
    problems += _cell_problems(table, spec, file)
    problems += _patient_problems(table, spec, file)
    _raise_if_any(problems)
    frame = _frame(table, spec)
    _raise_if_any(_count_problems(frame, spec, file))
    inputs, labels, _ = to_padded(
        frame,
        id_column=spec.id_column,
        time_column=spec.time_column,
        features=spec.features,
        label=spec.label,
        max_length=spec.max_length,
    )
    return inputs, labels.astype(np.int64)


def _count(count: int, unit: str) -> str:
    return f"{count} {unit}{'s' if count != 1 else ''}"


def _raise_if_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise SequenceFileError(problems)


def _fail(file: str, rule: Rule, hint: str, lines: int | None = None) -> SequenceFileError:
    """Build a file-level error: the file cannot be read far enough to check more."""
    return SequenceFileError([Problem(file, None, rule, lines, hint, unit="line")])


# --- reading


@dataclass(frozen=True, eq=False)
class _Column:
    """One spec column's cells as trimmed text, and which of them are missing."""

    text: np.ndarray
    missing: np.ndarray


@dataclass(frozen=True)
class _Table:
    """A file as read: its header as written, row count and the spec's columns."""

    header: tuple[str, ...]
    n_rows: int
    columns: Mapping[str, _Column]
    problems: tuple[Problem, ...] = ()


def _read(path: Path, file: str, spec: SequenceSpec) -> _Table:
    """Check the file can be read and read it; raise on any file-level problem."""
    readers: dict[str, Callable[[Path, str, SequenceSpec], _Table]] = {
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
                f"fedcare reads sequences from .csv, .parquet and .pq files, not "
                f"'{path.suffix}'; export one row per patient per time step as CSV (UTF-8, "
                "comma-separated) or Parquet",
            )
        if path.stat().st_size == 0:
            raise _fail(file, Rule.EMPTY_FILE, "the file is empty (0 bytes); export the data again")
        return reader(path, file, spec)
    except PermissionError:
        raise _fail(
            file, Rule.UNREADABLE, "permission denied; let fedcare's user read it"
        ) from None
    except OSError as error:
        raise _fail(file, Rule.UNREADABLE, f"cannot be read ({error.strerror})") from None


def _read_csv(path: Path, file: str, spec: SequenceSpec) -> _Table:
    text = _decode(path.read_bytes(), file)
    header = _csv_header(text, file, len(spec.columns()))
    try:
        # dtype=str and no default NA list: this module alone decides what is missing.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, ValueError):
        raise _fail(
            file,
            Rule.MALFORMED,
            "pandas cannot parse it as CSV (a row with more fields than the header?); "
            "export it again",
        ) from None
    if frame.empty:
        raise _fail(file, Rule.NO_DATA_ROWS, "the file has a header but no data rows")
    columns = {
        # By position: pandas renames a repeated header name, the raw header keeps it.
        name: _from_text(frame.iloc[:, header.index(name)].to_numpy(dtype=object, na_value=""))
        for name in spec.columns()
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
            "the file must be UTF-8 and these lines are not; re-save it as UTF-8 "
            "(Excel: 'CSV UTF-8'; pandas: encoding='utf-8')",
            lines=bad_lines,
        ) from None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_header(text: str, file: str, expected_columns: int) -> tuple[str, ...]:
    """Return the header (names trimmed), after checking it looks comma-separated."""
    try:
        first = next((row for row in csv.reader(io.StringIO(text)) if row), None)
    except csv.Error:
        raise _fail(
            file, Rule.MALFORMED, "not well-formed CSV (check quotes); export it again"
        ) from None
    if first is None:
        raise _fail(file, Rule.EMPTY_FILE, "the file holds no header and no rows")
    if len(first) == 1 and expected_columns > 1:
        found = [name for sep, name in _LIKELY_SEPARATORS.items() if sep in first[0]]
        seems = f"; it seems separated by {found[0]}" if found else ""
        raise _fail(
            file,
            Rule.NOT_COMMA_SEPARATED,
            f"the file does not look comma-separated: its header is one column where the "
            f"spec expects {expected_columns}{seems}; export it as CSV with ',' between columns",
        )
    return tuple(name.strip() for name in first)


def _from_text(cells: np.ndarray) -> _Column:
    text = pd.Series(cells, dtype=object).fillna("").astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool)
    return _Column(text=text.to_numpy(dtype=object), missing=missing)


def _read_parquet(path: Path, file: str, spec: SequenceSpec) -> _Table:
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
    for name in spec.columns():
        if name not in header:
            continue
        column = _parquet_column(table.column(header.index(name)))
        if column is None:
            problems.append(_storage_problem(file, name, table.column(header.index(name)).type))
        else:
            columns[name] = column
    return _Table(header=header, n_rows=table.num_rows, columns=columns, problems=tuple(problems))


def _parquet_column(data: pa.ChunkedArray) -> _Column | None:
    """Read a Parquet column as text (so CSV and Parquet share every rule), or ``None``."""
    types = pa.types
    if types.is_dictionary(data.type):
        data = data.cast(data.type.value_type)
    usable = (
        types.is_null(data.type)
        or types.is_integer(data.type)
        or types.is_floating(data.type)
        or types.is_decimal(data.type)
        or types.is_string(data.type)
        or types.is_large_string(data.type)
    )
    if not usable:
        return None
    # Arrow writes floats in their shortest round-trip form, so no precision is lost.
    text = pc.cast(data, pa.string()).to_numpy(zero_copy_only=False)
    return _from_text(text)


def _storage_problem(file: str, name: str, stored: pa.DataType) -> Problem:
    return Problem(
        file,
        name,
        Rule.WRONG_STORAGE_TYPE,
        None,
        f"stored as {stored}, but the spec needs a number or string column; convert the "
        "column before writing the Parquet file",
    )


# --- checking


def _header_problems(header: tuple[str, ...], spec: SequenceSpec, file: str) -> list[Problem]:
    expected = spec.columns()
    problems = [
        Problem(
            file,
            name,
            Rule.DUPLICATE_COLUMN,
            None,
            f"the header names it {header.count(name)} times; keep one column of that name",
        )
        for name in dict.fromkeys(header)
        if header.count(name) > 1
    ]
    problems += [_missing_column(file, name, header) for name in expected if name not in header]
    problems += [
        _unknown_column(file, position, name)
        for position, name in enumerate(header)
        if name not in expected and name not in header[:position]
    ]
    return problems


def _missing_column(file: str, name: str, header: tuple[str, ...]) -> Problem:
    close = [found for found in header if found.lower() == name.lower()]
    hint = f"the file has '{close[0]}'; rename it" if close else "add it, spelled as in the spec"
    return Problem(file, name, Rule.MISSING_COLUMN, None, f"the spec requires this column; {hint}")


def _unknown_column(file: str, position: int, name: str) -> Problem:
    # pandas writes its index as an unnamed first column (CSV) or as __index_level_0__.
    if name.startswith("__index_level_") or (position == 0 and not name):
        hint = "pandas wrote its index into the file; write it with index=False"
    else:
        hint = (
            "the spec does not list it, and an unknown column could carry identifiers into "
            "training; remove it from the file, or ask the federation to add it to the spec's "
            "features"
        )
    return Problem(file, name or f"#{position + 1} (no name)", Rule.UNKNOWN_COLUMN, None, hint)


def _problem_if(
    file: str, column: str, rule: Rule, failing: np.ndarray | int, hint: str, unit: str = "row"
) -> list[Problem]:
    """Return a problem counting the failing rows (or patients), or none when none fails."""
    count = int(np.count_nonzero(failing)) if isinstance(failing, np.ndarray) else failing
    return [Problem(file, column, rule, count, hint, unit)] if count else []


def _cell_problems(table: _Table, spec: SequenceSpec, file: str) -> list[Problem]:
    problems: list[Problem] = []
    for name, column in table.columns.items():
        problems += _problem_if(
            file,
            name,
            Rule.MISSING_VALUE,
            column.missing,
            "every cell must hold a value (empty, NA, NaN and null are missing); fill them or "
            "remove those rows",
        )
    for name in spec.features:
        if name in table.columns:
            problems += _feature_problems(file, name, table.columns[name])
    label = table.columns.get(spec.label)
    if label is not None:
        known = pd.Series(label.text).isin(spec.classes).to_numpy(dtype=bool)
        problems += _problem_if(
            file,
            spec.label,
            Rule.UNKNOWN_CLASS,
            ~label.missing & ~known,
            f"labels must be one of the spec's classes ({', '.join(spec.classes)}), exact "
            "spelling and case; recode those rows",
        )
    return problems


def _numbers(column: _Column) -> tuple[np.ndarray, np.ndarray]:
    """Parse a column's cells as float64; also return which present cells do not parse."""
    values = pd.to_numeric(pd.Series(column.text), errors="coerce").to_numpy(dtype=np.float64)
    unparseable = ~column.missing & np.isnan(values)
    return values, unparseable


def _feature_problems(file: str, name: str, column: _Column) -> list[Problem]:
    values, unparseable = _numbers(column)
    parsed = ~column.missing & ~unparseable
    # Too large for float32 counts as infinite: the model's inputs are float32.
    finite = np.isfinite(values) & (np.abs(values) <= _FLOAT32_MAX)
    return [
        *_problem_if(
            file,
            name,
            Rule.NOT_A_NUMBER,
            unparseable,
            "cells must be plain numbers with '.' as decimal point (no units, no text)",
        ),
        *_problem_if(
            file,
            name,
            Rule.NOT_FINITE,
            parsed & ~finite,
            "cells must be finite numbers within float32 range (no inf, -inf)",
        ),
    ]


def _patient_problems(table: _Table, spec: SequenceSpec, file: str) -> list[Problem]:
    """Rules about each patient's rows together: its time steps and its one label."""
    ids = table.columns.get(spec.id_column)
    if ids is None:
        return []
    problems = []
    times = table.columns.get(spec.time_column)
    if times is not None:
        problems += _time_problems(file, spec.time_column, ids, times)
    label = table.columns.get(spec.label)
    if label is not None:
        present = ~ids.missing & ~label.missing
        per_patient = pd.Series(label.text[present]).groupby(ids.text[present]).nunique()
        problems += _problem_if(
            file,
            spec.label,
            Rule.INCONSISTENT_LABEL,
            int(np.count_nonzero(per_patient.to_numpy() > 1)),
            "a patient's label must be the same on every one of its rows; correct those "
            "patients' rows",
            unit="patient",
        )
    return problems


def _time_problems(file: str, name: str, ids: _Column, times: _Column) -> list[Problem]:
    values, _ = _numbers(times)
    present = ~ids.missing & ~times.missing
    patients = ids.text[present]
    values = values[present]
    # Beyond 2**53 a float64 no longer holds every whole number, so steps could merge.
    whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) <= 2.0**53)
    steps = pd.DataFrame({"patient": patients, "step": values})
    checks = [
        (
            Rule.NOT_A_TIME_STEP,
            ~whole,
            "time steps must be whole numbers (0, 1, 2, ...), not dates, text or fractions; "
            "number each patient's rows in time order",
        ),
        (
            Rule.NEGATIVE_TIME_STEP,
            whole & (values < 0),
            "time steps must be 0 or more; renumber those patients' rows from 0",
        ),
        (
            Rule.DUPLICATE_TIME_STEP,
            whole & steps.duplicated(keep=False).to_numpy(dtype=bool),
            "a time step may appear once per patient; merge or renumber the repeated rows",
        ),
    ]
    return [
        problem
        for rule, failing, hint in checks
        for problem in _problem_if(
            file, name, rule, _patients_with(patients, failing), hint, unit="patient"
        )
    ]


def _patients_with(patients: np.ndarray, failing: np.ndarray) -> int:
    return int(pd.unique(patients[failing]).size)


def _frame(table: _Table, spec: SequenceSpec) -> pd.DataFrame:
    """Convert the valid file to numbers: id, time, features, and the label as a class index."""
    index = {name: position for position, name in enumerate(spec.classes)}
    data: dict[str, np.ndarray] = {
        spec.id_column: table.columns[spec.id_column].text,
        spec.time_column: _numbers(table.columns[spec.time_column])[0].astype(np.int64),
    }
    for name in spec.features:
        data[name] = _numbers(table.columns[name])[0]
    labels = table.columns[spec.label].text
    data[spec.label] = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    return pd.DataFrame(data)


def _count_problems(frame: pd.DataFrame, spec: SequenceSpec, file: str) -> list[Problem]:
    per_patient = frame.groupby(spec.id_column, sort=False)
    steps = per_patient.size().to_numpy()
    problems = _problem_if(
        file,
        spec.time_column,
        Rule.TOO_SHORT,
        steps < spec.min_length,
        f"every patient needs at least {spec.min_length} time steps (the spec's min_length); "
        "remove those patients or collect more steps",
        unit="patient",
    )
    if len(steps) < spec.min_patients:
        problems.append(
            Problem(
                file,
                None,
                Rule.TOO_FEW_PATIENTS,
                None,
                f"{_count(len(steps), 'patient')} in the file; the spec needs at least "
                f"{spec.min_patients}",
            )
        )
    classes = per_patient[spec.label].first().to_numpy()
    for position, name in enumerate(spec.classes):
        count = int(np.count_nonzero(classes == position))
        if count < spec.min_patients_per_class:
            problems.append(
                Problem(
                    file,
                    spec.label,
                    Rule.TOO_FEW_PATIENTS_IN_CLASS,
                    None,
                    f"class '{name}' has {_count(count, 'patient')}; the spec needs at least "
                    f"{spec.min_patients_per_class} of every class",
                )
            )
    return problems
