"""Draft a data contract from one hospital's own file, for a person to review.

``fedcare contract draft FILE --label COL`` reads a table, a sequence file or
images and writes what it can infer: each column's type, a category's values,
a number's range (rounded outward to two significant digits), the classes, the
sequence settings (the longest and shortest stay) or the images' size and
channels, and where cells are empty a fill policy. Everything it infers
describes *this* hospital's data, which is why the draft says so at the top: a
person must widen the ranges to what every hospital may hold, check the classes
and set the minimum counts before the federation agrees on it. The draft is
checked against the contract rules (:meth:`shared.contract.DataContract.parse`)
before it is written, and it accepts the file it was drafted from.

Notes for the reviewer name columns and counts, never a value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import tomli_w

from fedcare.client.contract_draft_images import draft_images
from fedcare.client.readers import read_site_data
from fedcare.client.readers.columns import Column, Kind, Layout, Table
from fedcare.client.readers.file_formats import read_table
from fedcare.client.readers.problems import FileCheckError, Problem
from fedcare.shared.contract import DataContract
from fedcare.shared.contract.missing import FillStatistic, MissingPolicy
from fedcare.shared.data import InputKind
from fedcare.shared.errors import DataError

MAX_CATEGORIES = 30
"""More distinct texts than this make a column look like an identifier, not a category."""

MAX_REGRESSION_CLASSES = 10
"""A numeric label with more distinct values than this is drafted as a regression target."""

MAX_LENGTH = 256
"""Longest ``max_length`` a draft proposes, whatever the longest stay."""

MIN_ROWS, MIN_ROWS_PER_CLASS = 20, 5
"""The minimum counts a draft proposes (lowered to what the file itself holds)."""

_POSITIVE_WORDS = {"1", "true", "yes", "y", "positive", "pos", "died", "dead", "death", "event"}


@dataclass
class Draft:
    """A drafted contract and what its reviewer should look at.

    Attributes
    ----------
    contract : dict[str, Any]
        The contract's TOML content.
    notes : list[str]
        One line per inference worth a second look (columns and counts only).
    """

    contract: dict[str, Any]
    notes: list[str] = field(default_factory=list)


class _DraftReadError(FileCheckError[Problem]):
    _agreement = "draft's reading"
    _loaded = "row"


def draft_contract(
    path: Path,
    *,
    label: str | None,
    kind: InputKind | None = None,
    id_columns: Sequence[str] = (),
    time_column: str | None = None,
) -> Draft:
    """Draft a contract from a hospital's file (see the module docstring).

    Parameters
    ----------
    path : Path
        A CSV or Parquet table or sequence file, a ``.npz`` file or a folder of
        class folders.
    label : str | None
        The label column (tables and sequences).
    kind : InputKind | None
        The format; ``None`` infers it (images from a ``.npz`` or a folder,
        sequences when ``time_column`` is given, else a table).
    id_columns : Sequence[str]
        Identifier columns: never features. For sequences the first is the patient id.
    time_column : str | None
        The time step column of a sequence file.

    Raises
    ------
    DataError
        If the file cannot be read or the options do not fit it, naming the file.
    """
    kind = kind or _infer_kind(path, time_column)
    name = path.stem if path.is_file() else path.name
    if kind is InputKind.IMAGES:
        contract, notes = draft_images(path)
        return Draft({"name": name, "format": kind.value, **contract}, notes)
    if label is None:
        raise DataError(f"{path}: a {kind} contract needs the label column: give --label")
    table = _read_all_columns(path)
    draft = Draft({"name": name})
    if kind is InputKind.SEQUENCES:
        _draft_sequences(draft, table, label, id_columns, time_column)
    else:
        _draft_table(draft, table, label, id_columns)
    return draft


def render_draft(draft: Draft, path: Path) -> str:
    """Return the draft as contract TOML, once it parses and accepts the file it came from.

    Raises
    ------
    DataError
        If the file breaks its own draft (say images of different sizes), naming
        the problems; nothing should then be written.
    """
    header = "\n".join(
        [
            f"# Drafted by `fedcare contract draft` from {path}.",
            "# The ranges, categories and classes below describe THIS hospital's data only",
            "# (ranges rounded outward, not widened). Before the federation agrees on it: widen",
            "# each range to what every hospital may hold, check the classes and the positive",
            '# class, set min_rows and min_rows_per_class, and choose each fill: "dp-mean"',
            "# spends privacy budget at every hospital; a number the federation agrees is public.",
            "",
        ]
    )
    text = header + tomli_w.dumps(draft.contract)
    contract = DataContract.parse(text, source=f"the draft of {path}")
    try:
        read_site_data(path, contract)
    except DataError as error:
        raise DataError(
            f"{path} does not meet its own draft, so none was written: {error}"
        ) from None
    return text


def _infer_kind(path: Path, time_column: str | None) -> InputKind:
    if path.is_dir() or path.suffix.lower() == ".npz":
        return InputKind.IMAGES
    return InputKind.SEQUENCES if time_column else InputKind.TABLE


def _read_all_columns(path: Path) -> Table:
    """Read every column of a CSV or Parquet file as text, with the hospital reader's checks."""
    header = _header(path)
    layout = Layout(
        columns=header,
        kinds=dict.fromkeys(header, Kind.TEXT),
        count_fields=True,
        parquet_as_text=True,
        agreement="draft",
        unsupported_hint="fedcare drafts from .csv, .parquet and .pq files, not '{suffix}'",
        lines_as_rows=True,
    )
    return read_table(path, layout, _DraftReadError)


def _header(path: Path) -> tuple[str, ...]:
    try:
        if path.suffix.lower() == ".csv":
            names = pd.read_csv(path, nrows=0, dtype=str, encoding="utf-8").columns
        else:
            names = pq.ParquetFile(path).schema_arrow.names
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, UnicodeDecodeError):
        return ()  # read_table then names what is wrong with the file
    return tuple(str(name) for name in names)


def _require(table: Table, *columns: str) -> None:
    for name in columns:
        if name not in table.columns:
            raise DataError(f"{table.file}: has no column '{name}'; name one of its columns")


def _draft_table(draft: Draft, table: Table, label: str, id_columns: Sequence[str]) -> None:
    _require(table, label, *id_columns)
    ids = list(id_columns)
    features: dict[str, dict[str, Any]] = {}
    for name in table.header:
        if name in (label, *ids):
            continue
        spec = _feature(table, name, draft.notes, sequences=False)
        if spec is None:
            ids.append(name)
        else:
            features[name] = spec
    labels = table.columns[label]
    draft.contract.update(_label(table.file, label, labels, draft.notes, regression=True))
    draft.contract["label"] = label
    if ids:
        draft.contract["id_columns"] = ids
    draft.contract["missing"] = _label_missing(table.file, label, labels, draft.notes)
    draft.contract |= _counts(draft.contract, labels.values[~labels.missing])
    draft.contract["features"] = features


def _draft_sequences(
    draft: Draft,
    table: Table,
    label: str,
    id_columns: Sequence[str],
    time_column: str | None,
) -> None:
    if not id_columns or time_column is None:
        raise DataError(
            f"{table.file}: a sequences contract needs the patient id and time step columns: "
            "give --id-column and --time-column"
        )
    id_column = id_columns[0]
    _require(table, label, id_column, time_column)
    features = {
        name: spec
        for name in table.header
        if name not in (label, id_column, time_column)
        and (spec := _feature(table, name, draft.notes, sequences=True)) is not None
    }
    if not features:
        raise DataError(f"{table.file}: no numeric feature column to draft a sequence from")
    # A sequence contract fills for the whole file: one gap anywhere, every feature a fill.
    gaps = [spec.pop("missing", None) for spec in features.values()]
    for spec in features.values():
        spec.pop("indicator", None)
        spec.pop("fill", None)
        if any(gaps):
            spec["fill"] = FillStatistic.DP_MEAN.value
    labels = table.columns[label]
    first = pd.Series(labels.values).groupby(table.columns[id_column].values, sort=False).first()
    patient_labels = Column(
        np.zeros(len(first), bool), first.to_numpy(), np.zeros(len(first), bool)
    )
    draft.contract.update(_label(table.file, label, patient_labels, draft.notes, regression=False))
    draft.contract["format"] = InputKind.SEQUENCES.value
    draft.contract["label"] = label
    policy = MissingPolicy.FORWARD_FILL if any(gaps) else MissingPolicy.REJECT
    draft.contract["missing"] = policy.value
    draft.contract |= _counts(draft.contract, patient_labels.values)
    draft.contract["sequences"] = {
        "id_column": id_column,
        "time_column": time_column,
        **_lengths(table.columns[id_column].values, draft.notes),
    }
    draft.contract["features"] = features


def _lengths(ids: np.ndarray, notes: list[str]) -> dict[str, int]:
    """Return ``max_length`` (the longest stay, at most :data:`MAX_LENGTH`) and ``min_length``."""
    stays = pd.Series(ids).value_counts().to_numpy()
    longest = int(min(stays.max(), MAX_LENGTH))
    if stays.max() > MAX_LENGTH:
        notes.append(f"max_length: stays run up to {int(stays.max())} steps; {MAX_LENGTH} kept")
    return {"max_length": longest, "min_length": int(min(stays.min(), longest))}


def _feature(
    table: Table, name: str, notes: list[str], *, sequences: bool
) -> dict[str, Any] | None:
    """Draft one column's feature table; ``None`` leaves it out as an identifier."""
    column = table.columns[name]
    present = ~column.missing
    if not present.any():
        notes.append(
            f"column '{name}' is empty in this file: listed as an id column, not a feature"
        )
        return None
    numbers = pd.to_numeric(pd.Series(column.values[present]), errors="coerce").to_numpy(float)
    if np.isfinite(numbers).all():
        spec = _number(numbers)
    elif sequences:
        notes.append(
            f"column '{name}' holds text: sequence features are numbers, so it is left out"
        )
        return None
    else:
        distinct = sorted(set(column.values[present].tolist()))
        if len(distinct) > MAX_CATEGORIES:
            notes.append(
                f"column '{name}' holds {len(distinct)} different texts: listed as an id "
                "column; make it a category by hand if it is one"
            )
            return None
        spec = {"type": "category", "categories": distinct}
    empty = int(np.count_nonzero(column.missing))
    if empty:
        notes.append(f"column '{name}': {empty} of {len(present)} cells empty: filled")
        spec |= {"missing": MissingPolicy.IMPUTE.value, "indicator": True}
        if spec["type"] != "category":
            spec["fill"] = FillStatistic.DP_MEAN.value
    return spec


def _number(values: np.ndarray) -> dict[str, Any]:
    whole = bool(np.all(values == np.round(values)))
    low, high = round_out(float(values.min()), up=False), round_out(float(values.max()), up=True)
    if whole:
        return {"type": "int", "min": math.floor(low), "max": math.ceil(high)}
    return {"type": "float", "min": low, "max": high}


def round_out(value: float, *, up: bool) -> float:
    """Round ``value`` up or down to two significant digits (0 stays 0).

    >>> round_out(13.7, up=True), round_out(13.7, up=False), round_out(0.0345, up=True)
    (14.0, 13.0, 0.035)
    """
    if value == 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = (math.ceil if up else math.floor)(value / step) * step
    return float(f"{rounded:.12g}")


def _label(
    file: str, name: str, labels: Column, notes: list[str], *, regression: bool
) -> dict[str, Any]:
    """Return the task and classes a label column holds (``regression``: if it may be one)."""
    values = labels.values[~labels.missing]
    distinct = sorted(set(values.tolist()), key=_numeric_first)
    numbers = pd.to_numeric(pd.Series(distinct), errors="coerce").to_numpy(float)
    if regression and np.isfinite(numbers).all() and len(distinct) > MAX_REGRESSION_CLASSES:
        notes.append(f"label '{name}': {len(distinct)} different numbers: drafted as regression")
        return {"task": "regression"}
    if len(distinct) < 2:
        raise DataError(
            f"{file}: column '{name}' holds {len(distinct)} class(es) here; a contract lists "
            "every class the federation's hospitals hold: draft it from a file with two or more, "
            "or write the classes by hand"
        )
    if len(distinct) > 2:
        return {"task": "multiclass", "classes": distinct}
    positive = _positive(distinct, values)
    notes.append(f"label '{name}': positive class is '{positive}'; check it")
    return {"task": "binary", "classes": distinct, "positive_class": positive}


def _numeric_first(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _positive(classes: list[str], values: np.ndarray) -> str:
    """Return the class that reads as the event (``1``, ``yes``, ``died``...), else the rarer."""
    for name in classes:
        if name.lower() in _POSITIVE_WORDS:
            return name
    counts = {name: int(np.count_nonzero(values == name)) for name in classes}
    return min(classes, key=lambda name: counts[name])


def _label_missing(file: str, name: str, labels: Column, notes: list[str]) -> str:
    empty = int(np.count_nonzero(labels.missing))
    if not empty:
        return MissingPolicy.REJECT.value
    notes.append(f"label '{name}': {empty} rows have none: those rows are dropped")
    return MissingPolicy.DROP_ROWS.value


def _counts(contract: dict[str, Any], labels: np.ndarray) -> dict[str, int]:
    """Minimum counts, never above what this file holds (so the draft accepts it)."""
    counts: dict[str, int] = {"min_rows": min(MIN_ROWS, len(labels))}
    if "classes" in contract:
        smallest = min(int(np.count_nonzero(labels == name)) for name in contract["classes"])
        counts["min_rows_per_class"] = max(1, min(MIN_ROWS_PER_CLASS, smallest))
    return counts
