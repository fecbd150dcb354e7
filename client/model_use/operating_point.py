"""Choose a binary model's operating threshold on validation data, for a stated target.

A fixed 0.5 threshold suits a balanced, well-calibrated model; for a rare
outcome a DP model can rank patients well (high AUROC) and still flag almost
none of them at 0.5. A site states what it needs instead: catch at least 80% of
positives (a sensitivity target) or raise at most 10% false alarms (a
specificity target), and the threshold is read off the ROC curve of validation
rows (:func:`sklearn.metrics.roc_curve`) that are then not used to report
performance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from sklearn import metrics as skm

from fedcare.shared.errors import FedcareError

DEFAULT_SENSITIVITY = 0.8
_TOLERANCE = 1e-9


class Target(StrEnum):
    """What the operating threshold is chosen for."""

    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    FIXED = "fixed"


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what it achieved on the validation rows.

    Attributes
    ----------
    threshold : float
        A probability at or above it predicts the positive class.
    target : Target
        What it was chosen for.
    goal : float
        The target's value (the threshold itself when fixed).
    validation_sensitivity, validation_specificity : float
        Achieved on the validation rows (``nan`` when there were none).
    validation_rows : int
        How many rows chose it.
    """

    threshold: float
    target: Target
    goal: float
    validation_sensitivity: float
    validation_specificity: float
    validation_rows: int


def choose_threshold(
    y_true: np.ndarray, probs: np.ndarray, target: Target, goal: float
) -> OperatingPoint:
    """Choose the threshold meeting ``goal`` with the best value of the other rate.

    For a sensitivity goal: the highest threshold whose sensitivity reaches it
    (the best specificity among those). For a specificity goal: the lowest
    threshold whose specificity reaches it. A fixed target takes ``goal`` as
    the threshold.

    Raises
    ------
    FedcareError
        If the validation rows do not hold both classes, or the goal is not in [0, 1].
    """
    if not 0.0 <= goal <= 1.0:
        raise FedcareError(f"the {target} target must lie in [0, 1], got {goal}")
    if target is Target.FIXED:
        threshold = goal
    else:
        if len(np.unique(y_true)) < 2:
            raise FedcareError(
                "the validation rows hold one class only, so no threshold can be chosen for a "
                f"{target} target; use a larger --validation-fraction, more data, or --threshold"
            )
        # Every score is a candidate: dropped "intermediate" points can be the optimum.
        fpr, tpr, thresholds = skm.roc_curve(y_true, probs, drop_intermediate=False)
        # The tolerance keeps a rate that meets the goal exactly (1 - 0.9 is 0.0999...) in.
        if target is Target.SENSITIVITY:
            position = int(np.flatnonzero(tpr >= goal - _TOLERANCE)[0])
        else:
            position = int(np.flatnonzero(fpr <= 1.0 - goal + _TOLERANCE)[-1])
        # roc_curve's first threshold is +inf (nobody positive): as a probability that is 1.
        threshold = float(min(thresholds[position], 1.0))
    sensitivity, specificity = _rates(y_true, probs, threshold)
    return OperatingPoint(threshold, target, goal, sensitivity, specificity, len(y_true))


def _rates(y_true: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[float, float]:
    if len(y_true) == 0:
        return math.nan, math.nan
    predicted = (probs >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true.astype(int), predicted, labels=[0, 1]).ravel()
    sensitivity = tp / (tp + fn) if tp + fn else math.nan
    specificity = tn / (tn + fp) if tn + fp else math.nan
    return float(sensitivity), float(specificity)
