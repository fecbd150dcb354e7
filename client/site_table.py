"""A hospital's table (CSV or Parquet), checked against the data contract before any use.

Every problem is collected, not just the first, and reported as file, column,
rule and how many rows fail: **never a value from the data**, not even an
offending category, since error text can leave the hospital. Duplicate rows are
allowed (two patients can share every measured value).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.contract import DataContract, Feature, FeatureType, MissingPolicy
from shared.data import TabularData
from shared.errors import DataError
from shared.tasks import TaskKind

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})
CSV_SUFFIXES = frozenset({".csv"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})


@dataclass(frozen=True)
class Problem:
    """One broken rule: where, which rule, how many rows, and what to do."""

    file: str
    column: str
    rule: str
    rows: int
    hint: str = ""

    def __str__(self) -> str:
        where = f"column '{self.column}'" if self.column else "file"
        count = f" ({self.rows} row{'s' if self.rows > 1 else ''})" if self.rows else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{self.file}: {where}: {self.rule}{count}{hint}"


class DataValidationError(DataError):
    """The file breaks the contract; :attr:`problems` lists every broken rule."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{path} does not meet the data contract ({len(problems)} problems):\n{lines}")


def load_site_table(path: Path, contract: DataContract) -> TabularData:
    """Read ``path``, check it against ``contract`` and encode it for the model.

    Returns
    -------
    TabularData
        Features in :meth:`DataContract.feature_names` order (float32, one-hot
        categories); labels 1 for the positive class (binary), the class index
        (multiclass) or the target (regression).

    Raises
    ------
    DataValidationError
        Listing every problem by file, column, rule and row count.
    """
    frame = _read(path, contract)
    _raise_if(path, _column_problems(path, frame, contract))
    missing = _missing_rows(frame, contract)
    problems = _value_problems(path, frame, contract, missing)
    if contract.missing is MissingPolicy.REJECT:
        problems = _missing_problems(path, frame, contract) + problems
    _raise_if(path, problems)
    frame = frame.loc[~missing].reset_index(drop=True)
    _raise_if(path, _row_problems(path, frame, contract))
    return TabularData(
        features=_encode_features(frame, contract),
        labels=_encode_labels(frame, contract),
        feature_names=contract.feature_names(),
    )


def _raise_if(path: Path, problems: list[Problem]) -> None:
    if problems:
        raise DataValidationError(path, problems)


def _file_problem(path: Path, rule: str, hint: str = "") -> DataValidationError:
    return DataValidationError(path, [Problem(path.name, "", rule, 0, hint)])


def _read(path: Path, contract: DataContract) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | PARQUET_SUFFIXES:
        raise _file_problem(path, f"unsupported file type '{suffix}'", "use .csv or .parquet")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _file_problem(path, "does not exist") from None
    except OSError as error:
        raise _file_problem(path, f"cannot be read ({error.strerror})") from None
    if not raw.strip():
        raise _file_problem(path, "is empty")
    frame = _read_parquet(path, raw) if suffix in PARQUET_SUFFIXES else _read_csv(path, raw, contract)
    if frame.empty:
        raise _file_problem(path, "has a header but no rows")
    return frame


def _read_csv(path: Path, raw: bytes, contract: DataContract) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _file_problem(path, "is not UTF-8 text", "export it as UTF-8 CSV") from None
    header = next(csv.reader(io.StringIO(text)), [])
    expected = len(contract.features) + len(contract.id_columns) + 1
    if len(header) == 1 and expected > 1 and any(sep in header[0] for sep in ";\t|"):
        raise _file_problem(path, "does not look comma-separated", "save it as CSV with ',' between columns")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataValidationError(
            path, [Problem(path.name, name, "appears more than once in the header", 0) for name in duplicated]
        )
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError):
        raise _file_problem(path, "is not a well-formed CSV table (rows have different numbers of fields)") from None


def _read_parquet(path: Path, raw: bytes) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(raw))
    except (OSError, ValueError):
        raise _file_problem(path, "is not a readable Parquet file") from None
    # Validate Parquet like CSV: as text, so the same rules (and messages) apply.
    return frame.apply(lambda column: column.map(_as_text))


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _column_problems(path: Path, frame: pd.DataFrame, contract: DataContract) -> list[Problem]:
    expected = [f.name for f in contract.features] + [contract.label, *contract.id_columns]
    problems = [
        Problem(path.name, name, "is required by the contract but missing", 0)
        for name in expected
        if name not in frame.columns
    ]
    problems += [
        Problem(
            path.name, str(name), "is not in the contract", 0,
            "remove it, or list it in id_columns if it identifies patients",
        )
        for name in frame.columns
        if name not in expected
    ]
    return problems


def _is_missing(series: pd.Series) -> pd.Series:
    return series.str.strip().str.lower().isin(MISSING_TOKENS)


def _missing_rows(frame: pd.DataFrame, contract: DataContract) -> pd.Series:
    columns = [f.name for f in contract.features] + [contract.label]
    return frame[columns].apply(_is_missing).any(axis=1)


def _missing_problems(path: Path, frame: pd.DataFrame, contract: DataContract) -> list[Problem]:
    problems = []
    for name in [f.name for f in contract.features] + [contract.label]:
        count = int(_is_missing(frame[name]).sum())
        if count:
            problems.append(
                Problem(path.name, name, "has missing values", count, "fill them, or set missing = \"drop-rows\"")
            )
    return problems


def _value_problems(path: Path, frame: pd.DataFrame, contract: DataContract, missing: pd.Series) -> list[Problem]:
    present = frame.loc[~missing]
    problems = [p for feature in contract.features for p in _feature_problems(path, present[feature.name], feature)]
    return problems + _label_problems(path, present[contract.label], contract)


def _feature_problems(path: Path, column: pd.Series, feature: Feature) -> list[Problem]:
    name = feature.name
    if feature.type is FeatureType.CATEGORY:
        unknown = int((~column.str.strip().isin(feature.categories)).sum())
        return [Problem(path.name, name, "has values outside its categories", unknown)] if unknown else []
    values = pd.to_numeric(column.str.strip(), errors="coerce")
    checks = [
        ("is not numeric", values.isna()),
        ("holds infinite values", np.isinf(values)),
        ("holds non-integer values", (values != values.round()) & np.isfinite(values))
        if feature.type is FeatureType.INT else None,
        (f"is below its minimum {feature.minimum:g}", values < feature.minimum) if feature.minimum is not None else None,
        (f"is above its maximum {feature.maximum:g}", values > feature.maximum) if feature.maximum is not None else None,
    ]
    return [Problem(path.name, name, rule, int(mask.sum())) for rule, mask in filter(None, checks) if mask.sum()]


def _label_problems(path: Path, column: pd.Series, contract: DataContract) -> list[Problem]:
    if contract.task_kind is TaskKind.REGRESSION:
        values = pd.to_numeric(column.str.strip(), errors="coerce")
        bad = int((values.isna() | np.isinf(values)).sum())
        return [Problem(path.name, contract.label, "is not a finite number", bad)] if bad else []
    outside = int((~column.str.strip().isin(contract.classes)).sum())
    return [Problem(path.name, contract.label, "has values outside the contract's classes", outside)] if outside else []


def _row_problems(path: Path, frame: pd.DataFrame, contract: DataContract) -> list[Problem]:
    if len(frame) < contract.min_rows:
        return [Problem(path.name, "", f"has {len(frame)} usable rows; the contract needs {contract.min_rows}", 0)]
    if contract.task_kind is TaskKind.REGRESSION:
        return []
    counts = frame[contract.label].str.strip().value_counts()
    present = [c for c in contract.classes if counts.get(c, 0) > 0]
    if len(present) < 2:
        return [Problem(path.name, contract.label, "holds a single class; a classifier cannot learn from it", 0)]
    return [
        Problem(
            path.name, contract.label,
            f"class '{c}' has {int(counts.get(c, 0))} rows; the contract needs {contract.min_rows_per_class}", 0,
        )
        for c in contract.classes
        if counts.get(c, 0) < contract.min_rows_per_class
    ]


def _encode_features(frame: pd.DataFrame, contract: DataContract) -> np.ndarray:
    columns = []
    for feature in contract.features:
        values = frame[feature.name].str.strip()
        if feature.type is FeatureType.CATEGORY:
            columns += [(values == category).to_numpy(np.float32) for category in feature.categories]
        else:
            columns.append(pd.to_numeric(values).to_numpy(np.float32))
    return np.stack(columns, axis=1)


def _encode_labels(frame: pd.DataFrame, contract: DataContract) -> np.ndarray:
    values = frame[contract.label].str.strip()
    if contract.task_kind is TaskKind.REGRESSION:
        return pd.to_numeric(values).to_numpy(np.float32)
    if contract.task_kind is TaskKind.BINARY:
        return (values == contract.positive_class).to_numpy(np.float32)
    return values.map({c: i for i, c in enumerate(contract.classes)}).to_numpy(np.int64)
