"""Checks on a file's columns and cells that the table and sequence readers both make.

Each returns :class:`client.readers.problems.Problem` s that name the column,
the rule and how many rows (or time steps) fail it, never a value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedcare.client.readers.columns import Column, Table
from fedcare.client.readers.problems import Problem, Rule, problem_if
from fedcare.shared.contract import Feature, FeatureType

PANDAS_INDEX_HINT = "pandas wrote its index into the file; write it with index=False"
"""The hint for an unknown column that is pandas' index, written by mistake."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    in_range: np.ndarray = np.abs(column.values) <= _FLOAT32_MAX
    finite: np.ndarray = parsed & np.isfinite(column.values) & in_range
    return finite


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


def feature_value_problems(
    file: str, feature: Feature, values: np.ndarray, judged: np.ndarray, unit: str = "row"
) -> list[Problem]:
    """Return the problems of a numeric feature's values with the contract's type and range.

    Parameters
    ----------
    file : str
        The file checked.
    feature : Feature
        The contract's feature: ``int`` values must be whole, and every value
        within ``minimum`` and ``maximum`` where they are set.
    values : numpy.ndarray
        Its values, any shape; only finite ones may be ``judged``.
    judged : numpy.ndarray
        bool, the shape of ``values``: the values to judge.
    unit : str
        What one value is counted as in the problems (``"row"``, ``"time step"``).

    Returns
    -------
    list[Problem]
        ``not-an-integer``, ``below-min`` and ``above-max`` problems, each
        counting its values.
    """
    # Bounds in the values' own precision: a float32 0.1 must not exceed a max of 0.1 by rounding.
    bound = values.dtype.type
    low = None if feature.minimum is None else bound(feature.minimum)
    high = None if feature.maximum is None else bound(feature.maximum)
    checks = [
        (
            Rule.NOT_AN_INTEGER,
            judged & (values != np.round(values)) if feature.type is FeatureType.INT else None,
            "the contract declares whole numbers; round or recode those cells",
        ),
        (
            Rule.BELOW_MIN,
            judged & (values < low) if low is not None else None,
            f"values must be >= {feature.minimum} (the contract's min); correct them, or widen "
            "the range in the contract if they are genuine",
        ),
        (
            Rule.ABOVE_MAX,
            judged & (values > high) if high is not None else None,
            f"values must be <= {feature.maximum} (the contract's max); correct them, or widen "
            "the range in the contract if they are genuine",
        ),
    ]
    return [
        problem
        for rule, failing, hint in checks
        if failing is not None
        for problem in problem_if(file, feature.name, rule, failing, hint, unit)
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
