"""How a hospital's CSV or Parquet file fails its reader: rules, problems and the error.

What the table reader (:mod:`client.readers.table`, one row per patient) and
the sequence reader (:mod:`client.readers.sequences`, one row per patient per
time step) report with: every finding is a :class:`Problem` that names the
file, the column, the rule and how many rows (or lines, or patients) fail it,
but never a value from the file: hospital data is confidential and error
messages travel into logs. A reader raises its findings together in its
:class:`FileCheckError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Generic, Protocol, TypeVar

import numpy as np

from fedcare.shared.errors import DataError


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
