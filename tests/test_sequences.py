"""Sequence padding and standardisation (shared.sequences): left-padded, masked, per channel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcare.shared.errors import DataError
from fedcare.shared.sequences import (
    MASK_CHANNEL,
    fit_padded_standardizer,
    standardize_padded,
    to_padded,
)

CANARY_ID = "CANARY-ID"
CANARY_TEXTS = ("987654", "CANARY")


def _assert_private(message: str) -> None:
    for secret in CANARY_TEXTS:
        assert secret not in message


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
