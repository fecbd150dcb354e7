"""Hospital sequence files (client.readers.sequences): long-format CSV and Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcare.client.readers.problems import Rule
from fedcare.client.readers.sequences import (
    SequenceFileError,
    check_sequence_values,
    load_sequence_file,
)
from fedcare.shared.contract import SequenceSpec
from fedcare.shared.errors import DataError
from fedcare.shared.sequences import MASK_CHANNEL
from tests.contracts import SEQUENCE_CONTRACT, VITALS, edit, parse_contract
from tests.contracts import SEQUENCE_FEATURES as FEATURES
from tests.contracts import sequence_spec as _spec

CANARY_VALUE = 987654.321
CANARY_ID = "CANARY-ID"
CANARY_TEXTS = ("987654", "CANARY")


def _long_rows(lengths: dict[str, int], labels: dict[str, str]) -> pd.DataFrame:
    """One row per patient per hour; heart_rate = 100 * patient number + hour."""
    rows = []
    for number, (patient, length) in enumerate(lengths.items()):
        for hour in range(length):
            rows.append(
                {
                    "patient_id": patient,
                    "hour": hour,
                    "heart_rate": 100.0 * number + hour,
                    "lactate": 0.5 * hour,
                    "outcome": labels[patient],
                }
            )
    return pd.DataFrame(rows)


def _good_rows() -> pd.DataFrame:
    return _long_rows({"p1": 2, "p2": 6, "p3": 4}, {"p1": "alive", "p2": "died", "p3": "alive"})


def _write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "vitals.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _error(path: Path, spec: SequenceSpec | None = None) -> SequenceFileError:
    with pytest.raises(SequenceFileError) as caught:
        load_sequence_file(path, spec or _spec())
    return caught.value


def _assert_private(message: str) -> None:
    for secret in CANARY_TEXTS:
        assert secret not in message


def _rules(error: SequenceFileError) -> set[Rule]:
    return {problem.rule for problem in error.problems}


# --- files that load


def test_load_csv_pads_and_maps_labels(tmp_path: Path) -> None:
    inputs, labels = load_sequence_file(_write_csv(tmp_path, _good_rows()), _spec())
    assert inputs.shape == (3, 4, len(FEATURES) + 1)
    assert inputs.dtype == np.float32
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 0]  # p1, p2, p3 in id order
    np.testing.assert_array_equal(inputs[0, :, MASK_CHANNEL], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(inputs[1, :, 0], [102.0, 103.0, 104.0, 105.0])  # last 4 of 6
    np.testing.assert_array_equal(inputs[2, :, MASK_CHANNEL], 1.0)


def test_load_csv_with_shuffled_rows_spaces_and_byte_order_mark(tmp_path: Path) -> None:
    frame = _good_rows().sample(frac=1.0, random_state=0)
    text = frame.to_csv(index=False).replace(",alive", ", alive ")
    path = tmp_path / "vitals.csv"
    path.write_bytes("\ufeff".encode() + text.encode())
    inputs, labels = load_sequence_file(path, _spec())
    expected, expected_labels = load_sequence_file(
        _write_csv(tmp_path, _good_rows(), "b.csv"), _spec()
    )
    np.testing.assert_array_equal(inputs, expected)
    np.testing.assert_array_equal(labels, expected_labels)


def test_load_parquet_with_integer_labels(tmp_path: Path) -> None:
    frame = _good_rows().assign(outcome=lambda f: (f["outcome"] == "died").astype("int64"))
    path = tmp_path / "vitals.parquet"
    frame.to_parquet(path, index=False)
    inputs, labels = load_sequence_file(path, _spec(classes=("0", "1")))
    assert inputs.shape == (3, 4, 3)
    assert labels.tolist() == [0, 1, 0]


# --- files that do not


def test_missing_file(tmp_path: Path) -> None:
    error = _error(tmp_path / "vitals.csv")
    assert _rules(error) == {Rule.FILE_NOT_FOUND}
    assert "vitals.csv" in str(error)


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "vitals.xlsx"
    path.write_bytes(b"not really excel")
    error = _error(path)
    assert _rules(error) == {Rule.UNSUPPORTED_FORMAT}
    assert "'.xlsx'" in str(error) and "Parquet" in str(error)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "vitals.csv"
    empty.write_bytes(b"")
    assert _rules(_error(empty)) == {Rule.EMPTY_FILE}
    header_only = _write_csv(tmp_path, _good_rows().iloc[:0], "header.csv")
    assert _rules(_error(header_only)) == {Rule.NO_DATA_ROWS}


def test_semicolon_separated_file(tmp_path: Path) -> None:
    path = tmp_path / "vitals.csv"
    _good_rows().to_csv(path, index=False, sep=";")
    error = _error(path)
    assert _rules(error) == {Rule.NOT_COMMA_SEPARATED}
    assert "';'" in str(error)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "vitals.csv"
    text = _good_rows().to_csv(index=False).replace("alive", "alivé")
    path.write_bytes(text.encode("latin-1"))
    error = _error(path)
    assert _rules(error) == {Rule.NOT_UTF8}
    assert "UTF-8" in str(error)


def test_missing_and_unknown_columns(tmp_path: Path) -> None:
    frame = _good_rows().drop(columns=["lactate"]).assign(ssn=CANARY_ID)
    error = _error(_write_csv(tmp_path, frame))
    message = str(error)
    assert _rules(error) == {Rule.MISSING_COLUMN, Rule.UNKNOWN_COLUMN}
    assert "column 'lactate': missing-column" in message
    assert "column 'ssn': unknown-column" in message
    assert "remove it" in message and "features" in message
    _assert_private(message)


def test_pandas_index_column_gets_a_specific_hint(tmp_path: Path) -> None:
    path = tmp_path / "vitals.csv"
    _good_rows().to_csv(path, index=True)
    assert "index=False" in str(_error(path))


def test_duplicate_column(tmp_path: Path) -> None:
    path = tmp_path / "vitals.csv"
    text = _good_rows().to_csv(index=False).splitlines()
    path.write_text("\n".join(f"{line},{line.split(',')[2]}" for line in text) + "\n")
    error = _error(path)
    assert _rules(error) == {Rule.DUPLICATE_COLUMN}
    assert "column 'heart_rate': duplicate-column" in str(error)


def test_non_numeric_and_non_finite_features(tmp_path: Path) -> None:
    frame = _good_rows().astype({"heart_rate": object, "lactate": object})
    frame.loc[0, "heart_rate"] = f"{CANARY_VALUE} bpm"
    frame.loc[1, "heart_rate"] = f"{CANARY_VALUE}e400"
    frame.loc[2, "lactate"] = "inf"
    frame.loc[[0, 1, 2], "patient_id"] = CANARY_ID
    message = str(_error(_write_csv(tmp_path, frame)))
    # pandas 3 reads an overflowing exponent as inf, pandas 2 as text: either is refused.
    assert "vitals.csv: column 'heart_rate': not-a-number in" in message
    assert "heart_rate': not-finite in 1 row:" in message or "not-a-number in 2 rows:" in message
    assert "vitals.csv: column 'lactate': not-finite in 1 row:" in message
    _assert_private(message)


def test_missing_values_are_counted_per_column(tmp_path: Path) -> None:
    frame = _good_rows().astype({"lactate": object, "outcome": object})
    frame.loc[[0, 3, 4], "lactate"] = ["", "NA", "null"]
    frame.loc[5, "outcome"] = "NaN"
    message = str(_error(_write_csv(tmp_path, frame)))
    assert "column 'lactate': missing-value in 3 rows" in message
    assert "column 'outcome': missing-value in 1 row" in message


def test_bad_time_steps_are_counted_in_patients(tmp_path: Path) -> None:
    frame = _good_rows().astype({"hour": object})
    frame.loc[frame["patient_id"] == "p1", "hour"] = [0, 0]  # duplicate
    frame.loc[frame.index[2], "hour"] = 1.5  # p2: fraction
    frame.loc[frame.index[3], "hour"] = "2024-01-01"  # p2: a date
    frame.loc[frame.index[8], "hour"] = -CANARY_VALUE  # p3: negative, and a fraction
    frame.loc[frame.index[9], "hour"] = -3  # p3: negative
    frame["patient_id"] = frame["patient_id"].replace("p3", CANARY_ID)
    error = _error(_write_csv(tmp_path, frame))
    message = str(error)
    assert "column 'hour': not-a-time-step in 2 patients" in message
    assert "column 'hour': negative-time-step in 1 patient:" in message
    assert "column 'hour': duplicate-time-step in 1 patient:" in message
    _assert_private(message)


def test_inconsistent_and_unknown_labels(tmp_path: Path) -> None:
    frame = _good_rows()
    frame.loc[0, "outcome"] = "died"  # p1 now has two labels
    frame.loc[frame.index[-1], "outcome"] = "CANARY-CLASS"
    frame["patient_id"] = frame["patient_id"].replace("p1", CANARY_ID)
    error = _error(_write_csv(tmp_path, frame))
    message = str(error)
    assert "column 'outcome': inconsistent-label in 2 patients" in message
    assert "column 'outcome': unknown-class in 1 row" in message
    assert "(alive, died)" in message
    _assert_private(message)


def test_patient_counts(tmp_path: Path) -> None:
    frame = _long_rows(
        {"p1": 1, "p2": 3, CANARY_ID: 1}, {"p1": "alive", "p2": "alive", CANARY_ID: "alive"}
    )
    spec = _spec(min_length=2, min_patients=5, min_patients_per_class=1)
    error = _error(_write_csv(tmp_path, frame), spec)
    message = str(error)
    assert _rules(error) == {Rule.TOO_SHORT, Rule.TOO_FEW_PATIENTS, Rule.TOO_FEW_PATIENTS_IN_CLASS}
    assert "column 'hour': too-short in 2 patients" in message
    assert "3 patients in the file; the spec needs at least 5" in message
    assert "class 'died' has 0 patients" in message
    _assert_private(message)


def test_every_problem_of_a_stage_is_reported_together(tmp_path: Path) -> None:
    frame = _good_rows().drop(columns=["lactate"]).astype({"heart_rate": object})
    frame.loc[0, "heart_rate"] = ""
    frame.loc[1, "outcome"] = "CANARY-CLASS"
    error = _error(_write_csv(tmp_path, frame))
    assert _rules(error) == {
        Rule.MISSING_COLUMN,
        Rule.MISSING_VALUE,
        Rule.UNKNOWN_CLASS,
        Rule.INCONSISTENT_LABEL,
    }
    assert str(error).startswith(f"{tmp_path / 'vitals.csv'} does not meet the sequence contract")
    assert "4 problems" in str(error)


def test_parquet_wrong_storage_type_and_missing_values(tmp_path: Path) -> None:
    frame = _good_rows()
    table = pa.table(
        {
            "patient_id": frame["patient_id"],
            "hour": pd.to_datetime(frame["hour"], unit="h"),
            "heart_rate": frame["heart_rate"].where(frame.index != 0),  # a null
            "lactate": frame["lactate"],
            "outcome": frame["outcome"],
        }
    )
    path = tmp_path / "vitals.parquet"
    pq.write_table(table, path)
    error = _error(path)
    message = str(error)
    assert "column 'hour': wrong-storage-type" in message
    assert "column 'heart_rate': missing-value in 1 row" in message


def test_broken_parquet(tmp_path: Path) -> None:
    path = tmp_path / "vitals.parquet"
    path.write_bytes(b"PAR1 this is not parquet PAR1")
    assert _rules(_error(path)) == {Rule.MALFORMED}


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "vitals.csv"
    folder.mkdir()
    assert _rules(_error(folder)) == {Rule.NOT_A_FILE}


def test_a_file_without_header_is_refused_without_echoing_its_first_row(tmp_path: Path) -> None:
    frame = _good_rows()
    frame.loc[0, "heart_rate"] = CANARY_VALUE
    path = tmp_path / "vitals.csv"
    frame.to_csv(path, index=False, header=False)
    message = str(_error(path))
    assert "no-header" in message
    assert "(a header), spelled as in the spec" in message
    _assert_private(message)


# --- values held to the contract


def test_integer_sequence_features_must_be_whole() -> None:
    contract = parse_contract(edit(SEQUENCE_CONTRACT, 'type = "float"\nmin = 0.0\nmax = 300.0',
                            'type = "int"'))  # fmt: skip
    inputs = np.zeros((2, 12, len(VITALS) + 1), dtype=np.float32)
    inputs[:, -3:, -1] = 1.0
    inputs[:, -3:, 0] = 70.0
    check_sequence_values(inputs, contract, "vitals.csv")  # whole numbers pass
    inputs[0, -1, 0] = 70.5
    inputs[1, 0, 0] = 0.25  # padding is never judged
    with pytest.raises(DataError, match=r"'heart_rate': not-an-integer in 1 time step:"):
        check_sequence_values(inputs, contract, "vitals.csv")
