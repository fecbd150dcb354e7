"""Sequence padding (shared.sequences) and hospital sequence files (client.sequence_files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcare.client.sequence_files import (
    Rule,
    SequenceFileError,
    SequenceSpec,
    SequenceSpecError,
    load_sequence_file,
)
from fedcare.shared.errors import DataError
from fedcare.shared.sequences import (
    MASK_CHANNEL,
    fit_padded_standardizer,
    standardize_padded,
    to_padded,
)

CANARY_VALUE = 987654.321
CANARY_ID = "CANARY-ID"
CANARY_TEXTS = ("987654", "CANARY")

FEATURES = ("heart_rate", "lactate")


def _spec(**changes: object) -> SequenceSpec:
    fields: dict[str, object] = {
        "id_column": "patient_id",
        "time_column": "hour",
        "label": "outcome",
        "features": FEATURES,
        "classes": ("alive", "died"),
        "max_length": 4,
        "min_length": 1,
        "min_patients": 2,
        "min_patients_per_class": 1,
    }
    fields.update(changes)
    return SequenceSpec(**fields)  # type: ignore[arg-type]


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


# --- shared.sequences


def _frame() -> pd.DataFrame:
    # Rows out of order on purpose: patients and time steps must be sorted.
    return pd.DataFrame(
        {
            "id": ["b", "a", "b", "a", "a", "c", "b"],
            "t": [2, 1, 0, 0, 2, 5, 1],
            "x": [12.0, 1.0, 10.0, 0.0, 2.0, 50.0, 11.0],
            "y": [7.0, 3.0, 7.0, 3.0, 3.0, 5.0, 7.0],
            "label": [1, 0, 1, 0, 0, 1, 1],
        }
    )


def _pad(frame: pd.DataFrame, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return to_padded(
        frame, id_column="id", time_column="t", features=["x", "y"], label="label",
        max_length=max_length,
    )  # fmt: skip


def test_to_padded_shapes_dtypes_and_sorted_patients() -> None:
    inputs, labels, ids = _pad(_frame(), 3)
    assert inputs.shape == (3, 3, 3)
    assert inputs.dtype == np.float32
    assert list(ids) == ["a", "b", "c"]
    assert labels.tolist() == [0, 1, 1]
    assert labels.dtype == _frame()["label"].dtype
    np.testing.assert_array_equal(inputs[0, :, 0], [0.0, 1.0, 2.0])  # sorted by time


def test_to_padded_left_pads_so_the_last_step_is_real() -> None:
    inputs, _, _ = _pad(_frame(), 4)
    patient_c = inputs[2]
    np.testing.assert_array_equal(patient_c[:, MASK_CHANNEL], [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(patient_c[:3, :MASK_CHANNEL], 0.0)
    np.testing.assert_array_equal(patient_c[3, :MASK_CHANNEL], [50.0, 5.0])
    assert np.all(inputs[:, -1, MASK_CHANNEL] == 1.0)


def test_to_padded_truncation_keeps_the_most_recent_steps() -> None:
    inputs, _, _ = _pad(_frame(), 2)
    np.testing.assert_array_equal(inputs[0, :, 0], [1.0, 2.0])
    np.testing.assert_array_equal(inputs[1, :, 0], [11.0, 12.0])
    np.testing.assert_array_equal(inputs[:2, :, MASK_CHANNEL], 1.0)


def test_to_padded_keeps_string_labels() -> None:
    frame = _frame().assign(label=lambda f: np.where(f["label"] == 1, "died", "alive"))
    _, labels, _ = _pad(frame, 3)
    assert labels.tolist() == ["alive", "died", "died"]


def test_to_padded_rejects_a_patient_with_two_labels_without_naming_it() -> None:
    frame = _frame()
    frame.loc[frame["id"] == "b", "id"] = CANARY_ID
    frame.loc[0, "label"] = 0
    with pytest.raises(DataError, match=r"column 'label': 1 patients") as caught:
        _pad(frame, 3)
    _assert_private(str(caught.value))


def test_to_padded_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_length"):
        _pad(_frame(), 0)
    with pytest.raises(ValueError, match="missing_feature"):
        to_padded(
            _frame(), id_column="id", time_column="t", features=["missing_feature"],
            label="label", max_length=2,
        )  # fmt: skip


def test_to_padded_of_no_rows() -> None:
    inputs, labels, ids = _pad(_frame().iloc[:0], 3)
    assert inputs.shape == (0, 3, 3)
    assert labels.shape == ids.shape == (0,)


def test_standardizer_uses_real_steps_and_keeps_padding_and_mask() -> None:
    inputs, _, _ = _pad(_frame(), 4)
    mean, scale = fit_padded_standardizer(inputs)
    real_x = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 50.0])
    real_y = np.array([3.0, 3.0, 3.0, 7.0, 7.0, 7.0, 5.0])
    np.testing.assert_allclose(mean, [real_x.mean(), real_y.mean()], rtol=1e-6)
    np.testing.assert_allclose(scale, [real_x.std(), real_y.std()], rtol=1e-6)
    standardized = standardize_padded(inputs, mean, scale)
    real = inputs[..., MASK_CHANNEL] == 1.0
    np.testing.assert_array_equal(standardized[~real], 0.0)
    np.testing.assert_array_equal(standardized[..., MASK_CHANNEL], inputs[..., MASK_CHANNEL])
    np.testing.assert_allclose(standardized[real][:, 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(standardized[real][:, 0].std(), 1.0, atol=1e-5)
    assert standardized.dtype == np.float32


def test_standardizer_gives_constant_features_scale_one() -> None:
    frame = _frame().assign(y=4.0)
    inputs, _, _ = _pad(frame, 4)
    mean, scale = fit_padded_standardizer(inputs)
    assert mean[1] == pytest.approx(4.0)
    assert scale[1] == 1.0
    standardized = standardize_padded(inputs, mean, scale)
    np.testing.assert_array_equal(standardized[..., 1], 0.0)


def test_standardize_padded_rejects_mismatched_statistics() -> None:
    inputs, _, _ = _pad(_frame(), 2)
    with pytest.raises(ValueError, match="one per feature"):
        standardize_padded(inputs, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        standardize_padded(inputs, np.zeros(2), np.zeros(2))


# --- client.sequence_files: files that load


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


# --- client.sequence_files: files that do not


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


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"features": ()}, "features"),
        ({"features": ("hour",)}, "hour"),
        ({"classes": ("alive",)}, "classes"),
        ({"classes": ("alive", "alive")}, "classes"),
        ({"max_length": 0}, "max_length"),
        ({"min_length": 0}, "min_length"),
        ({"min_patients_per_class": -1}, "min_patients_per_class"),
    ],
)
def test_inconsistent_spec(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SequenceSpecError, match=field):
        _spec(**changes)


def test_a_file_without_header_is_refused_without_echoing_its_first_row(tmp_path: Path) -> None:
    frame = _good_rows()
    frame.loc[0, "heart_rate"] = CANARY_VALUE
    path = tmp_path / "vitals.csv"
    frame.to_csv(path, index=False, header=False)
    message = str(_error(path))
    assert "no-header" in message
    assert "(a header), spelled as in the spec" in message
    _assert_private(message)
