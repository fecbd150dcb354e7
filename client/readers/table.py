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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.client.readers.column_checks import (
    PANDAS_INDEX_HINT,
    duplicate_and_missing_columns,
    feature_value_problems,
    finite_numbers,
    header_absent,
    number_problems,
    unknown_class_problems,
    unknown_column,
)
from fedcare.client.readers.columns import Column, Kind, Layout, Table
from fedcare.client.readers.file_formats import read_table
from fedcare.client.readers.problems import FileCheckError, Rule, plural, problem_if
from fedcare.client.readers.problems import Problem as FileProblem
from fedcare.shared.contract import DataContract, Feature, FeatureType, MissingPolicy
from fedcare.shared.data import Examples
from fedcare.shared.tasks import TaskKind

_UNSUPPORTED_HINT = (
    "fedcare reads .csv, .parquet and .pq files, not '{suffix}'; export the data as CSV "
    "(UTF-8, comma-separated) or Parquet"
)


@dataclass(frozen=True)
class Problem:
    """One way a hospital table breaks its contract; carries no value from the data.

    :class:`client.readers.problems.Problem` as a table reports it: its counts are
    rows, so it has ``rows_failing`` where that has ``failing`` and ``unit``.

    Attributes
    ----------
    file, column, rule, hint
        As in :class:`client.readers.problems.Problem`.
    rows_failing : int | None
        How many rows (for ``not-utf8``: lines) fail the rule; ``None`` when the
        rule is not about individual rows.
    """

    file: str
    column: str | None
    rule: Rule
    rows_failing: int | None
    hint: str

    def __str__(self) -> str:
        return str(FileProblem(self.file, self.column, self.rule, self.rows_failing, self.hint))


class DataValidationError(FileCheckError[Problem]):
    """A hospital file breaks its data contract; ``problems`` lists every way it does."""

    _agreement = "data contract"
    _loaded = "row"


def load_site_table(path: Path, contract: DataContract) -> Examples:
    """Read a hospital's CSV or Parquet file, check it against ``contract`` and encode it.

    Parameters
    ----------
    path : Path
        The hospital's table; its suffix (``.csv``, ``.parquet`` or ``.pq``) picks the reader.
    contract : DataContract
        The federation's data contract.

    Returns
    -------
    examples : Examples
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
    table = read_table(path, _layout(contract), _error)
    problems = [*table.problems, *_header_problems(table)]
    kept = _kept_rows(table, contract)
    problems += _cell_problems(table, contract, kept)
    _raise_if_any(problems)
    _raise_if_any(_row_problems(table, contract, kept))
    return _encode(table, contract, kept)


def _as_table_problem(problem: FileProblem) -> Problem:
    return Problem(problem.file, problem.column, problem.rule, problem.failing, problem.hint)


def _error(problems: Sequence[FileProblem]) -> DataValidationError:
    return DataValidationError([_as_table_problem(problem) for problem in problems])


def _raise_if_any(problems: Sequence[FileProblem]) -> None:
    if problems:
        raise _error(problems)


# --- reading


def _layout(contract: DataContract) -> Layout:
    """Return what the file must hold: the id, feature and label columns, in that order."""
    return Layout(
        columns=(*contract.id_columns, *(spec.name for spec in contract.features), contract.label),
        kinds=_kinds(contract),
        count_fields=True,
        parquet_as_text=False,
        agreement="contract",
        unsupported_hint=_UNSUPPORTED_HINT,
        lines_as_rows=True,
    )


def _kinds(contract: DataContract) -> dict[str, Kind]:
    """How each feature and label column is read (id columns are never read)."""
    kinds = {
        spec.name: Kind.TEXT if spec.type is FeatureType.CATEGORY else Kind.NUMBER
        for spec in contract.features
    }
    regression = contract.task_kind is TaskKind.REGRESSION
    kinds[contract.label] = Kind.NUMBER if regression else Kind.TEXT
    return kinds


# --- checking


def _header_problems(table: Table) -> list[FileProblem]:
    expected = table.layout.columns
    if absent := header_absent(table):
        return absent
    return duplicate_and_missing_columns(table) + [
        unknown_column(table, position, name, _unknown_hint(name))
        for position, name in enumerate(table.header)
        if name not in expected
    ]


def _unknown_hint(name: str) -> str:
    if name.startswith("__index_level_"):
        return PANDAS_INDEX_HINT
    return (
        "the contract does not list it, and an unknown column could carry identifiers into "
        "training; add it to the contract's id_columns if it identifies patients or sites, "
        "or remove it from the file"
    )


def _kept_rows(table: Table, contract: DataContract) -> np.ndarray:
    """Rows that are used: all of them, or under drop-rows those with no missing cell."""
    kept = np.ones(table.n_rows, dtype=bool)
    if contract.missing is MissingPolicy.DROP_ROWS:
        for column in table.columns.values():
            kept &= ~column.missing
    return kept


def _cell_problems(table: Table, contract: DataContract, kept: np.ndarray) -> list[FileProblem]:
    file = table.file
    problems: list[FileProblem] = []
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


def _missing_problems(
    file: str, name: str, column: Column, policy: MissingPolicy
) -> list[FileProblem]:
    if policy is MissingPolicy.DROP_ROWS:
        return []
    return problem_if(
        file,
        name,
        Rule.MISSING_VALUE,
        column.missing,
        "the contract rejects empty cells (and NA, NaN, null); fill them or remove those rows, "
        'or the federation may choose missing = "drop-rows" in the contract',
    )


def _feature_problems(
    file: str, spec: Feature, column: Column, kept: np.ndarray
) -> list[FileProblem]:
    usable = kept & ~column.missing
    if spec.type is FeatureType.CATEGORY:
        allowed = pd.Series(column.values).isin(spec.categories).to_numpy(dtype=bool)
        return problem_if(
            file,
            spec.name,
            Rule.UNKNOWN_CATEGORY,
            usable & ~allowed,
            f"values must be one of {', '.join(spec.categories)} (exact spelling and case); "
            "recode those cells",
        )
    return [
        *number_problems(file, spec.name, column, usable),
        *feature_value_problems(file, spec, column.values, finite_numbers(column, usable)),
    ]


def _label_problems(
    file: str, contract: DataContract, label: Column, kept: np.ndarray
) -> list[FileProblem]:
    usable = kept & ~label.missing
    if contract.task_kind is TaskKind.REGRESSION:
        return number_problems(file, contract.label, label, usable)
    return unknown_class_problems(
        file, contract.label, label, usable, contract.classes, agreement="contract"
    )


def _row_problems(table: Table, contract: DataContract, kept: np.ndarray) -> list[FileProblem]:
    file = table.file
    usable = int(np.count_nonzero(kept))
    problems = []
    if usable < contract.min_rows:
        dropped = table.n_rows - usable
        why = f" ({dropped} dropped for missing values)" if dropped else ""
        problems.append(
            FileProblem(
                file,
                None,
                Rule.TOO_FEW_ROWS,
                None,
                f"{plural(usable, 'row')} usable{why}; the contract needs at least "
                f"{contract.min_rows}",
            )
        )
    classification = contract.task_kind is not TaskKind.REGRESSION
    if classification and usable and contract.min_rows_per_class > 0:
        problems += _class_problems(file, contract, table.columns[contract.label].values[kept])
    return problems


def _class_problems(file: str, contract: DataContract, labels: np.ndarray) -> list[FileProblem]:
    counts = {name: int(np.count_nonzero(labels == name)) for name in contract.classes}
    if sum(1 for count in counts.values() if count) == 1:
        hint = (
            "every usable row has the same class; the contract needs "
            f"{contract.min_rows_per_class} or more rows of each class "
            f"({', '.join(contract.classes)})"
        )
        return [FileProblem(file, contract.label, Rule.SINGLE_CLASS, None, hint)]
    return [
        FileProblem(
            file,
            contract.label,
            Rule.TOO_FEW_ROWS_IN_CLASS,
            None,
            f"class '{name}' has {plural(count, 'row')}; the contract needs at least "
            f"{contract.min_rows_per_class} of every class",
        )
        for name, count in counts.items()
        if count < contract.min_rows_per_class
    ]


# --- encoding


def _encode(table: Table, contract: DataContract, kept: np.ndarray) -> Examples:
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
        is_positive: np.ndarray = values == contract.positive_class
        return is_positive.astype(np.float32)
    if contract.task_kind is TaskKind.MULTICLASS:
        index = {name: position for position, name in enumerate(contract.classes)}
        return np.fromiter((index[value] for value in values), dtype=np.int64, count=len(values))
    return values.astype(np.float32)
