"""A hospital's per-patient time series: read its long-format file and hold it to the contract.

A sequence file has one row per patient per time step: a patient id column, an
integer time step column, the feature columns and the patient's label repeated
on each of its rows. It is checked in three stages, each only once the one
before has passed, because a later stage means nothing on a file that failed an
earlier one (as in :mod:`client.readers.table`):

1. the file: it exists, is ``.csv``, ``.parquet`` or ``.pq``, is not empty and
   can be parsed (CSV: UTF-8, comma-separated, with data rows);
2. columns, cells and patients: every spec column present exactly once and no
   other; no missing cell; features finite numbers; time steps whole numbers,
   not negative and not repeated within a patient; one label per patient, and
   one of the spec's classes;
3. counts: every patient has enough steps, and there are enough patients in all
   and of every class;
4. values (:func:`read_sequences`, which holds the file to the whole contract):
   the steps kept are whole numbers where a feature is ``int``, and within its
   ``min`` and ``max``.

Within a stage every problem is collected and all are raised together in one
:class:`SequenceFileError`. Its message names the file, the column, the rule and
how many rows or patients fail it, but never a value from the file and never a
patient id: hospital data is confidential and error messages travel into logs.
The patient id groups rows and is then dropped; it never reaches the model.

Cells are trimmed of surrounding spaces; an empty cell or ``NA``, ``NaN`` or
``null`` (any case) is missing, as in :mod:`client.readers.table`. Labels are
compared exactly (case-sensitive) with the spec's class strings; integer
Parquet labels match them as decimal text (``0`` matches ``"0"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.client.readers.column_checks import (
    PANDAS_INDEX_HINT,
    duplicate_and_missing_columns,
    feature_value_problems,
    header_absent,
    number_problems,
    unknown_class_problems,
    unknown_column,
)
from fedcare.client.readers.columns import Column, Kind, Layout, Table
from fedcare.client.readers.file_formats import read_table
from fedcare.client.readers.problems import FileCheckError, Problem, Rule, plural, problem_if
from fedcare.shared.contract import DataContract, SequenceSpec
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.sequences import to_padded

_UNSUPPORTED_HINT = (
    "fedcare reads sequences from .csv, .parquet and .pq files, not '{suffix}'; export one row "
    "per patient per time step as CSV (UTF-8, comma-separated) or Parquet"
)


class SequenceFileError(FileCheckError[Problem]):
    """A hospital's sequence file breaks its spec; ``problems`` lists every way it does."""

    _agreement = "sequence contract"
    _loaded = "patient"


def load_sequence_file(path: Path, spec: SequenceSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read a hospital's long-format CSV or Parquet file, check it and pad its sequences.

    Parameters
    ----------
    path : Path
        The hospital's long-format file; its suffix (``.csv``, ``.parquet`` or ``.pq``)
        picks the reader.
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
        Listing every problem of the failing stage (see the module docstring); no
        patient is loaded.
    """
    table = read_table(path, _layout(spec), SequenceFileError)
    problems = [*table.problems, *_header_problems(table)]
    problems += _cell_problems(table, spec)
    problems += _patient_problems(table, spec)
    _raise_if_any(problems)
    frame = _frame(table, spec)
    _raise_if_any(_count_problems(frame, spec, table.file))
    inputs, labels, _ = to_padded(
        frame,
        id_column=spec.id_column,
        time_column=spec.time_column,
        features=spec.features,
        label=spec.label,
        max_length=spec.max_length,
    )
    return inputs, labels.astype(np.int64)


def read_sequences(path: Path, contract: DataContract) -> Examples:
    """Read a hospital's sequence file and hold it to a sequences contract.

    Parameters
    ----------
    path : Path
        The hospital's long-format ``.csv``, ``.parquet`` or ``.pq`` file.
    contract : DataContract
        The federation's contract, of format ``sequences``.

    Returns
    -------
    examples : Examples
        Padded sequences (:func:`load_sequence_file`) with the labels the
        contract's task trains on (:meth:`shared.contract.DataContract.labels_from_indices`).

    Raises
    ------
    SequenceFileError
        Listing every problem of the failing stage (see the module docstring).
    ContractError
        If the contract does not describe sequences.
    """
    inputs, classes = load_sequence_file(path, contract.sequence_spec())
    check_sequence_values(inputs, contract, str(path))
    labels = contract.labels_from_indices(classes)
    return Examples(inputs, labels, contract.feature_names(), InputKind.SEQUENCES)


def check_sequence_values(inputs: np.ndarray, contract: DataContract, file: str) -> None:
    """Hold padded sequences' real steps to the features' ``int`` type and ``min``/``max``.

    The file's cells are already finite numbers (stage 2); only the steps kept
    (each patient's last ``max_length``) are judged: they are all the model sees.

    Parameters
    ----------
    inputs : np.ndarray
        ``(patients, max_length, features + 1)`` as :func:`load_sequence_file`
        returns them.
    contract : DataContract
        The sequences contract whose features they hold.
    file : str
        The file they came from, for the message.

    Raises
    ------
    SequenceFileError
        Naming the file, each failing column, the rule and how many time steps
        fail it; never a value.
    """
    real = inputs[..., -1] > 0
    _raise_if_any(
        [
            problem
            for channel, feature in enumerate(contract.features)
            for problem in feature_value_problems(
                file, feature, inputs[..., channel], real, unit="time step"
            )
        ]
    )


def _raise_if_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise SequenceFileError(problems)


# --- reading


def _layout(spec: SequenceSpec) -> Layout:
    """Return what the file must hold: time and features read as numbers, id and label as text."""
    kinds = dict.fromkeys(spec.columns(), Kind.NUMBER)
    kinds[spec.id_column] = kinds[spec.label] = Kind.TEXT
    return Layout(
        columns=spec.columns(),
        kinds=kinds,
        count_fields=False,
        parquet_as_text=True,
        agreement="spec",
        unsupported_hint=_UNSUPPORTED_HINT,
        lines_as_rows=False,
    )


# --- checking


def _header_problems(table: Table) -> list[Problem]:
    header = table.header
    if absent := header_absent(table):
        return absent
    return duplicate_and_missing_columns(table) + [
        unknown_column(table, position, name, _unknown_hint(position, name))
        for position, name in enumerate(header)
        # Each unknown name once: a repeated one is a duplicate-column too.
        if name not in table.layout.columns and name not in header[:position]
    ]


def _unknown_hint(position: int, name: str) -> str:
    # pandas writes its index as an unnamed first column (CSV) or as __index_level_0__.
    if name.startswith("__index_level_") or (position == 0 and not name):
        return PANDAS_INDEX_HINT
    return (
        "the spec does not list it, and an unknown column could carry identifiers into "
        "training; remove it from the file, or ask the federation to add it to the spec's "
        "features"
    )


def _cell_problems(table: Table, spec: SequenceSpec) -> list[Problem]:
    file = table.file
    problems: list[Problem] = []
    for name, column in table.columns.items():
        problems += problem_if(
            file,
            name,
            Rule.MISSING_VALUE,
            column.missing,
            "every cell must hold a value (empty, NA, NaN and null are missing); fill them or "
            "remove those rows",
        )
    for name in spec.features:
        if name in table.columns:
            column = table.columns[name]
            problems += number_problems(file, name, column, ~column.missing)
    label = table.columns.get(spec.label)
    if label is not None:
        problems += unknown_class_problems(
            file, spec.label, label, ~label.missing, spec.classes, agreement="spec"
        )
    return problems


def _patient_problems(table: Table, spec: SequenceSpec) -> list[Problem]:
    """Rules about each patient's rows together: its time steps and its one label."""
    file = table.file
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
        per_patient = pd.Series(label.values[present]).groupby(ids.values[present]).nunique()
        problems += problem_if(
            file,
            spec.label,
            Rule.INCONSISTENT_LABEL,
            int(np.count_nonzero(per_patient.to_numpy() > 1)),
            "a patient's label must be the same on every one of its rows; correct those "
            "patients' rows",
            unit="patient",
        )
    return problems


def _time_problems(file: str, name: str, ids: Column, times: Column) -> list[Problem]:
    present = ~ids.missing & ~times.missing
    patients = ids.values[present]
    values = times.values[present]
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
        for problem in problem_if(
            file, name, rule, _patients_with(patients, failing), hint, unit="patient"
        )
    ]


def _patients_with(patients: np.ndarray, failing: np.ndarray) -> int:
    return int(pd.unique(patients[failing]).size)


def _frame(table: Table, spec: SequenceSpec) -> pd.DataFrame:
    """Convert the valid file to numbers: id, time, features, and the label as a class index."""
    index = {name: position for position, name in enumerate(spec.classes)}
    data: dict[str, np.ndarray] = {
        spec.id_column: table.columns[spec.id_column].values,
        spec.time_column: table.columns[spec.time_column].values.astype(np.int64),
    }
    for name in spec.features:
        data[name] = table.columns[name].values
    labels = table.columns[spec.label].values
    data[spec.label] = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    return pd.DataFrame(data)


def _count_problems(frame: pd.DataFrame, spec: SequenceSpec, file: str) -> list[Problem]:
    per_patient = frame.groupby(spec.id_column, sort=False)
    steps = per_patient.size().to_numpy()
    problems = problem_if(
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
                f"{plural(len(steps), 'patient')} in the file; the spec needs at "
                f"least {spec.min_patients}",
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
                    f"class '{name}' has {plural(count, 'patient')}; the spec needs "
                    f"at least {spec.min_patients_per_class} of every class",
                )
            )
    return problems
