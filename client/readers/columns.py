"""A CSV or Parquet file as a reader reads it: what it must hold, and its columns' cells.

A reader says in a :class:`Layout` which columns its file must have and how each
is read (:class:`Kind`); the file comes back as a :class:`Table` of
:class:`Column` s. Cells are trimmed of surrounding spaces; an empty cell or
``NA``, ``NaN`` or ``null`` (any case) is a missing value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from fedcare.client.readers.problems import Problem, Rule

MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
"""Cell texts (trimmed, any case) that mean "no value"."""


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


def text_column(cells: np.ndarray, kind: Kind) -> Column:
    """Read text cells: trim them, mark missing ones, parse numbers for number columns."""
    text = pd.Series(cells, dtype=object).fillna("").astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool)
    if kind is Kind.TEXT:
        return Column(missing, text.to_numpy(dtype=object), np.zeros(len(text), dtype=bool))
    values = np.asarray(pd.to_numeric(text.mask(missing), errors="coerce"), dtype=np.float64)
    return Column(missing, values, ~missing & np.isnan(values))


class Unreadable(Exception):
    """The file cannot be read far enough to check more; ``problem`` says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def unreadable(file: str, rule: Rule, hint: str, lines: int | None = None) -> Unreadable:
    """Build the error for a file-level problem; what it counts are the file's lines."""
    return Unreadable(Problem(file, None, rule, lines, hint, unit="line"))
