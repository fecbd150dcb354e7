"""Synthetic discharge records, enough rows to give a thousand virtual hospitals their own.

The built-in real datasets hold a few hundred patients, which a large federation
cannot share out (each hospital needs a few dozen rows to train and a dozen to
evaluate on). These records stand in: routine measurements at discharge and a
30-day readmission label drawn from a fixed logistic risk with two interactions,
so a linear model learns most of it and there is still something to learn.
"""

from __future__ import annotations

import numpy as np

RECORD_COLUMNS = (
    "age",
    "sex",
    "bmi",
    "systolic_bp",
    "heart_rate",
    "glucose",
    "creatinine",
    "hemoglobin",
    "white_cells",
    "prior_admissions",
    "length_of_stay",
    "comorbidities",
)

_MEANS = np.array([64, 0.5, 27, 132, 82, 6.4, 95, 12.8, 8.2, 1.1, 5.5, 2.4], np.float64)
_SPREADS = np.array([15, 0.5, 5, 19, 14, 2.1, 35, 1.8, 3.0, 1.3, 4.0, 1.6], np.float64)
_RISK_WEIGHTS = np.array(
    [0.45, 0.1, 0.15, 0.1, 0.3, 0.35, 0.55, -0.4, 0.25, 0.7, 0.5, 0.6], np.float64
)
_BASELINE_LOGIT = -1.6
"""Gives a readmission rate near 25%."""

_COUNT_CEILINGS = {"sex": 1.0, "prior_admissions": 12.0, "comorbidities": 15.0}
"""Upper bounds of the columns that are counts or flags rather than measurements."""


def record_ranges() -> dict[str, tuple[float, float]]:
    """Return each column's public range: the measurements' mean +- 4 spreads, counts from 0.

    Public because they are the generator's own design, not statistics of drawn rows;
    a value outside its range is clipped to it when scaled, never rejected.
    """
    ranges = {}
    for name, mean, spread in zip(RECORD_COLUMNS, _MEANS, _SPREADS, strict=True):
        if name in _COUNT_CEILINGS:
            ranges[name] = (0.0, _COUNT_CEILINGS[name])
        else:
            ranges[name] = (max(float(mean - 4 * spread), 0.0), float(mean + 4 * spread))
    return ranges


def make_records(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` discharge records and their readmission labels.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(n, 12)`` float32 measurements in :data:`RECORD_COLUMNS` order, in
        their natural units, and ``(n,)`` float32 labels (1: readmitted).
    """
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, len(RECORD_COLUMNS)))
    scores[:, 1] = rng.random(n) < 0.5  # sex: 0 or 1, not a measurement
    scores[:, 9] = rng.poisson(1.1, n)  # prior admissions: a count
    scores[:, 11] = rng.poisson(2.4, n)  # comorbidities: a count
    counts = [1, 9, 11]
    standard = scores.copy()
    standard[:, counts] = (scores[:, counts] - _MEANS[counts]) / _SPREADS[counts]
    logit = (
        _BASELINE_LOGIT
        + standard @ _RISK_WEIGHTS
        + 0.3 * standard[:, 0] * standard[:, 6]  # old age with poor kidneys
        + 0.25 * standard[:, 9] * standard[:, 11]  # frequent flyers with many conditions
    )
    labels = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    features = scores.copy()
    measured = [i for i in range(len(RECORD_COLUMNS)) if i not in counts]
    features[:, measured] = _MEANS[measured] + scores[:, measured] * _SPREADS[measured]
    return features.astype(np.float32), labels.astype(np.float32)
