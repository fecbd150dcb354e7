"""Hospital tables (client.readers.table): every rule refused by name, no data echoed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcare.client.readers.problems import Rule
from fedcare.client.readers.table import DataValidationError, Problem, load_site_table
from fedcare.shared.contract import DataContract
from fedcare.shared.tasks import Task, TaskKind
from tests.contracts import TABLE_CONTRACT as CONTRACT
from tests.contracts import parse_contract as _contract

FILE = "site.csv"
NUMBER_CANARY = "987654"
"""Digits planted in offending numeric cells: they must never reach an error message."""
TEXT_CANARY = "CANARYVALUE"

Grid = list[list[str]]


def _valid_grid() -> Grid:
    """Header plus 8 valid rows: 4 benign, 4 malignant."""
    return [
        ["patient_id", "age", "radius", "sex", "diagnosis"],
        ["p0", "40", "10.5", "F", "benign"],
        ["p1", "51", "12.0", "M", "malignant"],
        ["p2", "62", "20.25", "F", "malignant"],
        ["p3", "33", "8.0", "F", "benign"],
        ["p4", "70", "15.5", "M", "malignant"],
        ["p5", "45", "11.0", "M", "benign"],
        ["p6", "58", "19.0", "F", "benign"],
        ["p7", "66", "13.5", "M", "malignant"],
    ]


def _write(tmp_path: Path, grid: Grid, name: str = FILE) -> Path:
    path = tmp_path / name
    path.write_text("".join(",".join(row) + "\n" for row in grid), encoding="utf-8")
    return path


def _set(grid: Grid, column: str, row: int, value: str) -> None:
    grid[row + 1][grid[0].index(column)] = value


def _column(grid: Grid, column: str, values: list[str]) -> None:
    for row, value in enumerate(values):
        _set(grid, column, row, value)


def _drop_column(grid: Grid, column: str) -> None:
    index = grid[0].index(column)
    for row in grid:
        del row[index]


def _add_column(grid: Grid, name: str, value: str) -> None:
    grid[0].append(name)
    for row in grid[1:]:
        row.append(value)


def _failure(path: Path, contract: DataContract | None = None) -> DataValidationError:
    with pytest.raises(DataValidationError) as caught:
        load_site_table(path, contract or _contract())
    return caught.value


def _assert_reports(
    error: DataValidationError, rule: Rule, column: str | None, rows: int | None, file: str = FILE
) -> Problem:
    """The error holds ``rule`` for ``column`` and its message names file, column and rule only."""
    message = str(error)
    problem = next((p for p in error.problems if p.rule is rule), None)
    assert problem is not None, message
    assert (problem.column, problem.rows_failing) == (column, rows), message
    assert file in message and rule.value in message
    if column is not None:
        assert f"column '{column}'" in message
    assert NUMBER_CANARY not in message and TEXT_CANARY.lower() not in message.lower()
    return problem


# --- happy paths


def test_valid_csv_loads_features_labels_and_names(tmp_path: Path) -> None:
    data = load_site_table(_write(tmp_path, _valid_grid()), _contract())
    assert data.feature_names == ("age", "radius", "sex=F", "sex=M")
    assert data.features.dtype == np.float32 and data.features.shape == (8, 4)
    assert data.labels.dtype == np.float32
    np.testing.assert_array_equal(data.features[0], [40, 10.5, 1, 0])
    np.testing.assert_array_equal(data.features[1], [51, 12.0, 0, 1])
    np.testing.assert_array_equal(data.labels, [0, 1, 1, 0, 1, 0, 0, 1])


def test_valid_parquet_loads_like_csv(tmp_path: Path) -> None:
    grid = _valid_grid()
    frame = pd.DataFrame(grid[1:], columns=grid[0]).astype({"age": "int64", "radius": "float64"})
    frame.to_parquet(tmp_path / "site.parquet", index=False)
    from_parquet = load_site_table(tmp_path / "site.parquet", _contract())
    from_csv = load_site_table(_write(tmp_path, grid), _contract())
    np.testing.assert_array_equal(from_parquet.features, from_csv.features)
    np.testing.assert_array_equal(from_parquet.labels, from_csv.labels)
    assert from_parquet.feature_names == from_csv.feature_names


def test_parquet_integer_labels_match_quoted_classes(tmp_path: Path) -> None:
    text = CONTRACT.replace('["benign", "malignant"]', '["0", "1"]').replace(
        'positive_class = "malignant"', 'positive_class = "1"'
    )
    grid = _valid_grid()
    frame = pd.DataFrame(grid[1:], columns=grid[0]).astype({"age": "int64", "radius": "float64"})
    frame["diagnosis"] = (frame["diagnosis"] == "malignant").astype("int64")
    frame.to_parquet(tmp_path / "site.pq", index=False)
    data = load_site_table(tmp_path / "site.pq", _contract(text))
    np.testing.assert_array_equal(data.labels, [0, 1, 1, 0, 1, 0, 0, 1])


def test_multiclass_labels_are_indices_in_class_order(tmp_path: Path) -> None:
    text = (
        CONTRACT.replace('"binary"', '"multiclass"')
        .replace('["benign", "malignant"]', '["low", "mid", "high"]')
        .replace('positive_class = "malignant"\n', "")
        .replace("min_rows_per_class = 2", "min_rows_per_class = 1")
    )
    grid = _valid_grid()
    _column(grid, "diagnosis", ["high", "low", "mid", "mid", "low", "high", "high", "low"])
    data = load_site_table(_write(tmp_path, grid), _contract(text))
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.labels, [2, 0, 1, 1, 0, 2, 2, 0])
    assert _contract(text).task() == Task(TaskKind.MULTICLASS, num_classes=3)


def test_regression_labels_are_floats(tmp_path: Path) -> None:
    grid = _valid_grid()
    _column(grid, "diagnosis", [str(0.5 * i) for i in range(8)])
    data = load_site_table(_write(tmp_path, grid), _contract(_regression_contract()))
    assert data.labels.dtype == np.float32
    np.testing.assert_allclose(data.labels, [0.5 * i for i in range(8)])


def _regression_contract() -> str:
    return (
        CONTRACT.replace('"binary"', '"regression"')
        .replace('classes = ["benign", "malignant"]\n', "")
        .replace('positive_class = "malignant"\n', "")
        .replace("min_rows_per_class = 2\n", "")
    )


def test_drop_rows_policy_drops_rows_with_missing_cells(tmp_path: Path) -> None:
    grid = _valid_grid()
    _set(grid, "radius", 0, "")
    _set(grid, "sex", 1, "NA")
    _set(grid, "age", 2, "null")
    text = CONTRACT.replace('missing = "reject"', 'missing = "drop-rows"').replace(
        "min_rows = 6", "min_rows = 5"
    )
    data = load_site_table(_write(tmp_path, grid), _contract(text))
    assert len(data) == 5
    np.testing.assert_array_equal(data.labels, [0, 1, 0, 0, 1])


def test_drop_rows_rechecks_min_rows(tmp_path: Path) -> None:
    grid = _valid_grid()
    for row in range(3):
        _set(grid, "radius", row, "NaN")
    text = CONTRACT.replace('missing = "reject"', 'missing = "drop-rows"')
    error = _failure(_write(tmp_path, grid), _contract(text))
    _assert_reports(error, Rule.TOO_FEW_ROWS, None, None)
    assert "3 dropped" in str(error)


def test_duplicate_rows_are_allowed(tmp_path: Path) -> None:
    grid = _valid_grid()
    grid.append(list(grid[1]))
    assert len(load_site_table(_write(tmp_path, grid), _contract())) == 9


def test_spaces_and_excel_byte_order_mark_are_tolerated(tmp_path: Path) -> None:
    grid = _valid_grid()
    _set(grid, "sex", 0, " F ")
    path = _write(tmp_path, grid)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_site_table(path, _contract()).features[0, 2] == 1.0


# --- broken cells and columns


def _no_column(column: str) -> Callable[[Grid], None]:
    return lambda grid: _drop_column(grid, column)


def _cells(column: str, **rows: str) -> Callable[[Grid], None]:
    def mutate(grid: Grid) -> None:
        for row, value in rows.items():
            _set(grid, column, int(row[1:]), value)

    return mutate


CELL_CASES = [
    ("missing-column", _no_column("radius"), Rule.MISSING_COLUMN, "radius", None),
    ("missing-id-column", _no_column("patient_id"), Rule.MISSING_COLUMN, "patient_id", None),
    ("missing-label", _no_column("diagnosis"), Rule.MISSING_COLUMN, "diagnosis", None),
    (
        "unknown-column",
        lambda g: _add_column(g, "mrn", TEXT_CANARY),
        Rule.UNKNOWN_COLUMN,
        "mrn",
        None,
    ),
    (
        "duplicate-column",
        lambda g: _add_column(g, "radius", "9876540.5"),
        Rule.DUPLICATE_COLUMN,
        "radius",
        None,
    ),
    ("not-a-number", _cells("radius", r2=TEXT_CANARY), Rule.NOT_A_NUMBER, "radius", 1),
    ("decimal-comma", _cells("radius", r1='"12,987654"'), Rule.NOT_A_NUMBER, "radius", 1),
    ("not-an-integer", _cells("age", r3="37.987654", r4="41.5"), Rule.NOT_AN_INTEGER, "age", 2),
    ("missing-reject", _cells("radius", r1="", r2="NA"), Rule.MISSING_VALUE, "radius", 2),
    ("missing-label-cell", _cells("diagnosis", r0="null"), Rule.MISSING_VALUE, "diagnosis", 1),
    ("infinite", _cells("radius", r0="inf", r1="-Infinity"), Rule.NOT_FINITE, "radius", 2),
    ("float32-overflow", _cells("radius", r0="9876541e300"), Rule.NOT_FINITE, "radius", 1),
    ("below-min", _cells("radius", r4="-987654.321"), Rule.BELOW_MIN, "radius", 1),
    ("above-max", _cells("radius", r5="987654.321"), Rule.ABOVE_MAX, "radius", 1),
    ("unknown-category", _cells("sex", r0=TEXT_CANARY), Rule.UNKNOWN_CATEGORY, "sex", 1),
    ("category-case", _cells("sex", r0="f"), Rule.UNKNOWN_CATEGORY, "sex", 1),
    ("unknown-class", _cells("diagnosis", r0=TEXT_CANARY), Rule.UNKNOWN_CLASS, "diagnosis", 1),
]


@pytest.mark.parametrize(
    ("mutate", "rule", "column", "rows"),
    [case[1:] for case in CELL_CASES],
    ids=[case[0] for case in CELL_CASES],
)
def test_broken_cell_or_column_is_reported(
    tmp_path: Path, mutate: Callable[[Grid], None], rule: Rule, column: str, rows: int | None
) -> None:
    grid = _valid_grid()
    mutate(grid)
    _assert_reports(_failure(_write(tmp_path, grid)), rule, column, rows)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    grid = _valid_grid()
    _set(grid, "radius", 0, "987654.5")
    _set(grid, "sex", 1, TEXT_CANARY)
    _drop_column(grid, "age")
    _add_column(grid, "zip_code", "98765")
    error = _failure(_write(tmp_path, grid))
    rules = {problem.rule for problem in error.problems}
    assert rules == {
        Rule.ABOVE_MAX,
        Rule.UNKNOWN_CATEGORY,
        Rule.MISSING_COLUMN,
        Rule.UNKNOWN_COLUMN,
    }
    assert len(str(error).splitlines()) == 1 + len(error.problems)


def test_single_class_is_reported(tmp_path: Path) -> None:
    grid = _valid_grid()
    _column(grid, "diagnosis", ["benign"] * 8)
    _assert_reports(_failure(_write(tmp_path, grid)), Rule.SINGLE_CLASS, "diagnosis", None)


def test_too_few_rows_of_a_class_is_reported(tmp_path: Path) -> None:
    grid = _valid_grid()
    _column(grid, "diagnosis", ["benign"] * 7 + ["malignant"])
    problem = _assert_reports(
        _failure(_write(tmp_path, grid)), Rule.TOO_FEW_ROWS_IN_CLASS, "diagnosis", None
    )
    assert "'malignant' has 1 row" in problem.hint


def test_too_few_rows_is_reported(tmp_path: Path) -> None:
    grid = _valid_grid()[:6]
    _assert_reports(_failure(_write(tmp_path, grid)), Rule.TOO_FEW_ROWS, None, None)


def test_regression_label_must_be_numeric(tmp_path: Path) -> None:
    grid = _valid_grid()
    _column(grid, "diagnosis", [str(i) for i in range(8)])
    _set(grid, "diagnosis", 6, TEXT_CANARY)
    error = _failure(_write(tmp_path, grid), _contract(_regression_contract()))
    _assert_reports(error, Rule.NOT_A_NUMBER, "diagnosis", 1)


# --- broken files


def test_missing_header_echoes_no_data(tmp_path: Path) -> None:
    grid = _valid_grid()
    _set(grid, "patient_id", 0, TEXT_CANARY)
    _assert_reports(_failure(_write(tmp_path, grid[1:])), Rule.NO_HEADER, None, None)


def test_ragged_rows_are_reported(tmp_path: Path) -> None:
    grid = _valid_grid()
    grid[3].append(TEXT_CANARY)
    grid[5].pop()
    _assert_reports(_failure(_write(tmp_path, grid)), Rule.WRONG_FIELD_COUNT, None, 2)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(b"")
    _assert_reports(_failure(tmp_path / FILE), Rule.EMPTY_FILE, None, None)


def test_header_only(tmp_path: Path) -> None:
    _assert_reports(_failure(_write(tmp_path, _valid_grid()[:1])), Rule.NO_DATA_ROWS, None, None)


def test_semicolon_separated_file(tmp_path: Path) -> None:
    grid = _valid_grid()
    _set(grid, "radius", 0, "987654,5")
    (tmp_path / FILE).write_text("".join(";".join(row) + "\n" for row in grid), encoding="utf-8")
    error = _failure(tmp_path / FILE)
    _assert_reports(error, Rule.NOT_COMMA_SEPARATED, None, None)
    assert "does not look comma-separated" in str(error) and "';'" in str(error)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    grid = _valid_grid()
    _set(grid, "patient_id", 0, "Jos\u00e9")
    _set(grid, "patient_id", 4, "Ren\u00e9e")
    path = tmp_path / FILE
    path.write_bytes("".join(",".join(row) + "\n" for row in grid).encode("latin-1"))
    error = _failure(path)
    _assert_reports(error, Rule.NOT_UTF8, None, 2)
    assert "UTF-8" in str(error) and "Jos" not in str(error)


def test_file_not_found(tmp_path: Path) -> None:
    _assert_reports(_failure(tmp_path / FILE), Rule.FILE_NOT_FOUND, None, None)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / FILE).mkdir()
    _assert_reports(_failure(tmp_path / FILE), Rule.NOT_A_FILE, None, None)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path, _valid_grid(), name="site.xlsx")
    _assert_reports(_failure(path), Rule.UNSUPPORTED_FORMAT, None, None, file="site.xlsx")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "site.parquet"
    path.write_bytes(b"PAR1" + TEXT_CANARY.encode() * 3)
    _assert_reports(_failure(path), Rule.MALFORMED, None, None, file="site.parquet")


def test_parquet_column_of_wrong_dtype(tmp_path: Path) -> None:
    grid = _valid_grid()
    frame = pd.DataFrame(grid[1:], columns=grid[0]).astype({"age": "int64"})
    frame.loc[0, "radius"] = TEXT_CANARY
    frame.to_parquet(tmp_path / "site.parquet", index=False)
    error = _failure(tmp_path / "site.parquet")
    _assert_reports(error, Rule.WRONG_STORAGE_TYPE, "radius", None, file="site.parquet")


def test_parquet_nulls_and_range_follow_csv_rules(tmp_path: Path) -> None:
    grid = _valid_grid()
    frame = pd.DataFrame(grid[1:], columns=grid[0]).astype({"age": "float64", "radius": "float64"})
    frame.loc[0, "age"] = np.nan
    frame.loc[1, "radius"] = 987654.321
    frame.to_parquet(tmp_path / "site.parquet", index=False)
    error = _failure(tmp_path / "site.parquet")
    _assert_reports(error, Rule.MISSING_VALUE, "age", 1, file="site.parquet")
    _assert_reports(error, Rule.ABOVE_MAX, "radius", 1, file="site.parquet")


def test_parquet_pandas_index_is_named(tmp_path: Path) -> None:
    grid = _valid_grid()
    frame = pd.DataFrame(grid[1:], columns=grid[0], index=list("abcdefgh"))
    frame.astype({"age": "int64", "radius": "float64"}).to_parquet(tmp_path / "site.parquet")
    error = _failure(tmp_path / "site.parquet")
    problem = _assert_reports(
        error, Rule.UNKNOWN_COLUMN, "__index_level_0__", None, file="site.parquet"
    )
    assert "index=False" in problem.hint
