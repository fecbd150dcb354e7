"""Read a file of patients to predict: every row accounted for, scored or reported.

Tables and sequence files are read with the hospital's file layer
(:func:`client.readers.file_formats.read_table`: the file-level checks and the header
checks of training), then each patient is checked on its own against the
contract (:mod:`client.model_use.records`): one bad row is reported, with its
id, field and rule, and every other row is still scored. The label column is
not needed (and ignored when present). A file that cannot be read, or whose
columns are wrong, is refused whole.

Images come in the contract's own layouts (a ``.npz`` or class folders), read
and checked whole by the hospital's image reader; their ids are the array
position (``train-0``) or the file's path inside the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.client.model_use.records import (
    STEPS_FIELD,
    RecordProblem,
    check_records,
    encode_records,
    record_schema,
)
from fedcare.client.readers import column_checks, read_site_data
from fedcare.client.readers.columns import Kind, Layout, Table
from fedcare.client.readers.file_formats import read_table
from fedcare.client.readers.problems import FileCheckError, Problem, Rule
from fedcare.shared.contract import DataContract, FeatureType
from fedcare.shared.data import InputKind

_UNSUPPORTED_HINT = (
    "fedcare reads patients to predict from .csv, .parquet and .pq files, not '{suffix}'; "
    "export them as CSV (UTF-8, comma-separated) or Parquet"
)


class PredictionFileError(FileCheckError[Problem]):
    """A file of patients to predict cannot be read as the contract says; nothing was scored."""

    _agreement = "data contract"
    _loaded = "patient"


@dataclass(frozen=True)
class PatientsToScore:
    """A file's patients: the raw inputs of those that meet the contract, and the others' faults.

    Attributes
    ----------
    ids : list[str]
        Every patient (row, stay or image) of the file, in file order.
    inputs : np.ndarray
        Raw (unstandardised) model inputs of the valid patients.
    valid : list[int]
        Positions in ``ids`` of the rows of ``inputs``.
    problems : list[RecordProblem]
        Why each other patient was not scored.
    labels : np.ndarray | None
        Image class indices of the valid patients, when the layout carries them.
    """

    ids: list[str]
    inputs: np.ndarray
    valid: list[int]
    problems: list[RecordProblem]
    labels: np.ndarray | None = None


def read_patients(path: Path, contract: DataContract) -> PatientsToScore:
    """Read the patients of ``path`` to predict, each checked on its own against ``contract``.

    Raises
    ------
    shared.errors.DataError
        If the file cannot be read or its columns do not meet the contract
        (:class:`PredictionFileError`), or (images) the images break it.
    """
    kind = contract.input_kind()
    if kind is InputKind.IMAGES:
        return _images(path, contract)
    if kind is InputKind.SEQUENCES:
        table = _read(path, contract, _sequence_columns(contract))
        raw, ids = _stays(table, contract)
    else:
        table = _read(path, contract, (*contract.id_columns, *_feature_names(contract)))
        raw, ids = _rows(table, contract)
    records, valid, problems = check_records(record_schema(contract), raw, ids)
    return PatientsToScore(ids, encode_records(contract, records), valid, problems)


def _feature_names(contract: DataContract) -> tuple[str, ...]:
    return tuple(feature.name for feature in contract.features)


def _sequence_columns(contract: DataContract) -> tuple[str, ...]:
    layout = contract.sequences
    assert layout is not None
    return (layout.id_column, layout.time_column, *_feature_names(contract))


def _read(path: Path, contract: DataContract, columns: tuple[str, ...]) -> Table:
    kinds = dict.fromkeys(columns, Kind.TEXT)
    if contract.label:
        kinds[contract.label] = Kind.TEXT  # read only to be recognised, never used
    layout = Layout(
        columns=columns,
        kinds=kinds,
        count_fields=contract.input_kind() is InputKind.TABLE,
        parquet_as_text=True,
        agreement="contract",
        unsupported_hint=_UNSUPPORTED_HINT,
        lines_as_rows=True,
    )
    table = read_table(path, layout, PredictionFileError)
    problems = [*table.problems, *_header_problems(table, contract)]
    if problems:
        raise PredictionFileError(problems)
    return table


def _header_problems(table: Table, contract: DataContract) -> list[Problem]:
    if absent := column_checks.header_absent(table):
        return absent
    known = {*table.layout.columns, contract.label}
    hint = (
        "the contract does not list it; remove it from the file, or add it to the contract's "
        "id_columns if it identifies patients"
    )
    return column_checks.duplicate_and_missing_columns(table) + [
        column_checks.unknown_column(table, position, name, hint)
        for position, name in enumerate(table.header)
        if name not in known and name not in table.header[:position]
    ]


def _cell(table: Table, name: str, row: int, number: bool) -> Any:
    """One cell as the record schema takes it: ``None`` if missing, numbers parsed when they can."""
    column = table.columns[name]
    if column.missing[row]:
        return None
    text = str(column.values[row])
    if not number:
        return text
    try:
        return float(text)
    except ValueError:
        return text  # the schema names it as not a number


def _numeric(contract: DataContract) -> set[str]:
    return {
        feature.name for feature in contract.features if feature.type is not FeatureType.CATEGORY
    }


def _rows(table: Table, contract: DataContract) -> tuple[list[dict[str, Any]], list[str]]:
    numeric = _numeric(contract)
    columns = (*contract.id_columns, *_feature_names(contract))
    raw = [
        {name: _cell(table, name, row, name in numeric) for name in columns}
        for row in range(table.n_rows)
    ]
    first_id = contract.id_columns[0] if contract.id_columns else None
    ids = [
        str(entry[first_id]) if first_id and entry[first_id] is not None else f"row {row + 1}"
        for row, entry in enumerate(raw)
    ]
    return raw, ids


def _stays(table: Table, contract: DataContract) -> tuple[list[dict[str, Any]], list[str]]:
    layout = contract.sequences
    assert layout is not None
    id_column = table.columns[layout.id_column]
    if id_column.missing.any():
        hint = "every row must name its patient; fill the id or remove those rows"
        count = int(np.count_nonzero(id_column.missing))
        raise PredictionFileError(
            [Problem(table.file, layout.id_column, Rule.MISSING_VALUE, count, hint)]
        )
    numeric = {layout.time_column, *_numeric(contract)}
    step_columns = (layout.time_column, *_feature_names(contract))
    stays: dict[str, list[dict[str, Any]]] = {}
    for row in range(table.n_rows):
        step = {name: _cell(table, name, row, name in numeric) for name in step_columns}
        stays.setdefault(str(id_column.values[row]), []).append(step)
    ids = list(stays)
    raw = [{layout.id_column: stay, STEPS_FIELD: stays[stay]} for stay in ids]
    return raw, ids


def _images(path: Path, contract: DataContract) -> PatientsToScore:
    examples = read_site_data(path, contract)
    ids = image_ids(path, contract, len(examples))
    labels = examples.labels
    return PatientsToScore(ids, examples.features, list(range(len(ids))), [], labels)


def image_ids(path: Path, contract: DataContract, count: int) -> list[str]:
    """Name each image as the image reader orders them.

    A ``.npz``: ``train-0``, ``train-1``, ..., then ``val-*`` and ``test-*``; a
    folder: each file's path inside it (``nodule/0007.png``), class by class in
    the contract's order, files sorted by name.
    """
    from fedcare.client.readers.image_folders import IMAGE_SUFFIXES
    from fedcare.client.readers.image_npz import SPLITS

    if path.is_dir():
        names = [
            f"{name}/{entry.name}"
            for name in contract.classes
            for entry in sorted((path / name).iterdir())
            if not entry.name.startswith(".")
            and entry.is_file()
            and entry.suffix.lower() in IMAGE_SUFFIXES
        ]
    else:
        with np.load(path, allow_pickle=False) as archive:
            names = [
                f"{split}-{index}"
                for split in SPLITS
                if f"{split}_labels" in archive.files
                for index in range(len(archive[f"{split}_labels"]))
            ]
    if len(names) != count:  # the reader's order is the contract: never guess
        raise PredictionFileError(
            [Problem(str(path), None, Rule.MALFORMED, None, "could not name every image")]
        )
    return names
