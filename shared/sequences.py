"""Per-patient time series as fixed-size arrays, the same way in simulations and at hospitals.

Sequence models (RNNs, temporal convolutions, transformers) take one array of
shape ``(patients, steps, channels)``, but patients are observed for different
numbers of steps. Both the simulated federation and every hospital must turn
their long-format rows (one row per patient per time step) into that array in
exactly the same way, or the shared model would see differently shaped data at
different sites. This module is that one way:

* each patient's rows are ordered by time;
* a sequence longer than ``max_length`` keeps its **last** ``max_length`` steps,
  because the most recent observations matter most for predicting deterioration;
* a shorter sequence is **left-padded** with zeros, so the final step of every
  sequence is real data (a model reading the last step never reads padding);
* one extra channel, the mask, at index :data:`MASK_CHANNEL` (the last channel),
  is ``1.0`` on real steps and ``0.0`` on padding, so a model and the
  standardizer can tell a padded zero from a measured zero.

Standardization statistics are computed over real steps only: padding would
pull every mean towards zero and shrink every spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedcare.shared.errors import DataError

MASK_CHANNEL = -1
"""Index of the mask channel in padded inputs: the last one (1.0 real step, 0.0 padding)."""

_MIN_SCALE = 1e-12
"""Spreads at or below this count as a constant feature, which keeps scale 1."""


def to_padded(
    frame: pd.DataFrame,
    *,
    id_column: str,
    time_column: str,
    features: Sequence[str],
    label: str,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn long-format rows into padded, masked sequences, one per patient.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per patient per time step, with numeric ``features``; the
        patient's ``label`` is repeated on each of its rows.
    id_column : str
        Column identifying the patient; used for grouping only, never as input.
    time_column : str
        Column ordering a patient's steps (any sortable values).
    features : Sequence[str]
        Input columns, in channel order.
    label : str
        Column holding the patient's label.
    max_length : int
        Steps kept per patient (at least 1).

    Returns
    -------
    inputs : numpy.ndarray
        float32 ``(n_patients, max_length, len(features) + 1)``; the last
        channel (:data:`MASK_CHANNEL`) is the mask. Longer sequences keep their
        last ``max_length`` steps; shorter ones are left-padded with zeros.
    labels : numpy.ndarray
        ``(n_patients,)``, each patient's label in the frame's dtype.
    patient_ids : numpy.ndarray
        ``(n_patients,)``, the patients in sorted order, matching the rows of
        ``inputs`` and ``labels``.

    Raises
    ------
    ValueError
        If ``max_length`` is below 1 or a named column is not in ``frame``.
    DataError
        If patient ids are missing or a patient's rows disagree on the label
        (counts only, never a value).
    """
    _check_arguments(frame, (id_column, time_column, *features, label), max_length)
    ordered = frame.sort_values([id_column, time_column], kind="stable")
    codes, patient_ids = pd.factorize(ordered[id_column], sort=True)
    if np.any(codes < 0):
        raise DataError(
            f"column '{id_column}': {int(np.count_nonzero(codes < 0))} rows have no patient id; "
            "every row must name its patient"
        )
    counts = np.bincount(codes, minlength=len(patient_ids))
    starts = np.cumsum(counts) - counts
    labels = _patient_labels(ordered[label], codes, starts, label)
    values = ordered[list(features)].to_numpy(dtype=np.float32)
    inputs = _place(values, codes, counts, starts, max_length, len(patient_ids))
    return inputs, labels, np.asarray(patient_ids)


def fit_padded_standardizer(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and spread over the real (unpadded) steps of ``inputs``.

    Parameters
    ----------
    inputs : numpy.ndarray
        Padded inputs as :func:`to_padded` returns them.

    Returns
    -------
    mean, scale : numpy.ndarray
        float32 ``(n_features,)`` each (the mask channel excluded). A constant
        feature, or one with no real step at all, gets scale 1, so standardizing
        only centres it.
    """
    _check_padded(inputs)
    real = inputs[..., :MASK_CHANNEL][inputs[..., MASK_CHANNEL] > 0.5].astype(np.float64)
    n_features = inputs.shape[-1] - 1
    if len(real) == 0:
        return np.zeros(n_features, dtype=np.float32), np.ones(n_features, dtype=np.float32)
    mean = real.mean(axis=0)
    spread = real.std(axis=0)
    scale = np.where(spread > _MIN_SCALE, spread, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def standardize_padded(inputs: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardize the features of real steps, keeping padding at 0 and the mask as it is.

    Parameters
    ----------
    inputs : numpy.ndarray
        Padded inputs as :func:`to_padded` returns them (not modified).
    mean, scale : numpy.ndarray
        ``(n_features,)`` each, as :func:`fit_padded_standardizer` returns them;
        every scale must be finite and positive.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``inputs``: ``(x - mean) / scale`` on real steps,
        exactly 0 on padded steps, and the mask channel unchanged.

    Raises
    ------
    ValueError
        If the shapes do not match or a scale is not finite and positive.
    """
    _check_padded(inputs)
    n_features = inputs.shape[-1] - 1
    mean = np.asarray(mean, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if mean.shape != (n_features,) or scale.shape != (n_features,):
        raise ValueError(
            f"mean and scale must have shape ({n_features},), one per feature channel; "
            f"got {mean.shape} and {scale.shape}"
        )
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError("every scale must be finite and positive; refit the standardizer")
    mask = inputs[..., MASK_CHANNEL:]
    standardized = np.empty(inputs.shape, dtype=np.float32)
    standardized[..., :MASK_CHANNEL] = (inputs[..., :MASK_CHANNEL] - mean) / scale * mask
    standardized[..., MASK_CHANNEL] = inputs[..., MASK_CHANNEL]
    return standardized


def _check_arguments(frame: pd.DataFrame, columns: Sequence[str], max_length: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    missing = [name for name in dict.fromkeys(columns) if name not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the frame: {', '.join(missing)}")


def _check_padded(inputs: np.ndarray) -> None:
    if inputs.ndim != 3 or inputs.shape[-1] < 1:
        raise ValueError(
            "padded inputs must have shape (patients, steps, features + 1 mask channel); "
            f"got {inputs.shape}"
        )


def _patient_labels(
    column: pd.Series, codes: np.ndarray, starts: np.ndarray, label: str
) -> np.ndarray:
    """Each patient's label, after checking that all its rows agree (NaN counts as a value)."""
    per_patient = column.groupby(codes, sort=True).nunique(dropna=False)
    disagreeing = int(np.count_nonzero(per_patient.to_numpy() > 1))
    if disagreeing:
        raise DataError(
            f"column '{label}': {disagreeing} patients have rows with different labels; "
            "a patient's label must be the same on every row"
        )
    labels: np.ndarray = column.to_numpy()[starts]
    return labels


def _place(
    values: np.ndarray,
    codes: np.ndarray,
    counts: np.ndarray,
    starts: np.ndarray,
    max_length: int,
    n_patients: int,
) -> np.ndarray:
    """Write each patient's last ``max_length`` rows right-aligned into a zeroed array."""
    # Rows are grouped by patient and time-ordered, so position from the end is arithmetic.
    position = np.arange(len(codes)) - starts[codes]
    from_end = counts[codes] - 1 - position
    kept = from_end < max_length
    slot = max_length - 1 - from_end[kept]
    inputs = np.zeros((n_patients, max_length, values.shape[1] + 1), dtype=np.float32)
    inputs[codes[kept], slot, :MASK_CHANNEL] = values[kept]
    inputs[codes[kept], slot, MASK_CHANNEL] = 1.0
    return inputs
