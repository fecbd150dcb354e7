"""Calibration and decision curves: do probabilities mean what they say, and pay off.

* **Calibration**: patients binned by predicted probability (10 equal-width
  bins, :func:`sklearn.calibration.calibration_curve`), the observed rate per
  bin against the mean prediction, and the expected calibration error: the
  bins' gaps weighted by how many patients each holds. A multiclass model is
  judged on its top class (confidence against accuracy). For regression,
  the calibration slope and intercept of observed on predicted values
  (:class:`sklearn.linear_model.LinearRegression`); 1 and 0 are perfect.
* **Decision curve** (Vickers and Elkin, 2006; binary tasks): the net benefit
  of treating the patients the model flags at each threshold probability,
  ``TP/n - FP/n * t / (1 - t)``, beside treating everyone and treating no one.
  scikit-learn has no decision curve; the counts come from its confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LinearRegression

from fedcare.shared.tasks import Task, TaskKind

CALIBRATION_BINS = 10
DECISION_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class Calibration:
    """A calibration curve and its expected calibration error.

    Attributes
    ----------
    mean_predicted, observed : list[float]
        Per non-empty bin: the mean predicted probability and the observed rate.
    counts : list[int]
        Patients per non-empty bin.
    ece : float
        Expected calibration error.
    judged : str
        What was calibrated: ``"positive class"`` or ``"top class"``.
    """

    mean_predicted: list[float]
    observed: list[float]
    counts: list[int]
    ece: float
    judged: str


def calibration(task: Task, y_true: np.ndarray, scores: np.ndarray) -> Calibration | None:
    """Compute the calibration of a classifier's probabilities; ``None`` for regression."""
    if task.kind is TaskKind.BINARY:
        outcome, probs, judged = y_true.astype(int), scores, "positive class"
    elif task.kind is TaskKind.MULTICLASS:
        outcome = (scores.argmax(axis=1) == y_true).astype(int)
        probs, judged = scores.max(axis=1), "top class"
    else:
        return None
    observed, predicted = calibration_curve(
        outcome, probs, n_bins=CALIBRATION_BINS, strategy="uniform"
    )
    # The same bins as calibration_curve draws (equal width over [0, 1]), to count patients.
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], probs), minlength=CALIBRATION_BINS)
    counts = counts[counts > 0]
    ece = float(np.sum(counts / len(probs) * np.abs(observed - predicted)))
    return Calibration(
        mean_predicted=[float(value) for value in predicted],
        observed=[float(value) for value in observed],
        counts=[int(count) for count in counts],
        ece=ece,
        judged=judged,
    )


def regression_calibration(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Calibration slope and intercept of observed on predicted values."""
    fit = LinearRegression().fit(predicted.reshape(-1, 1), y_true)
    return {
        "calibration-slope": float(fit.coef_[0]),
        "calibration-intercept": float(fit.intercept_),
        "calibration-in-the-large": float(np.mean(y_true) - np.mean(predicted)),
    }


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit per threshold probability, for the model and the two default strategies."""

    thresholds: list[float]
    model: list[float]
    treat_all: list[float]
    treat_none: list[float]


def decision_curve(y_true: np.ndarray, probs: np.ndarray) -> DecisionCurve:
    """Compute the net benefit of the model, treating all and treating none."""
    labels = y_true.astype(int)
    n = len(labels)
    prevalence = float(labels.mean()) if n else 0.0
    model, treat_all = [], []
    for threshold in DECISION_THRESHOLDS:
        odds = threshold / (1.0 - threshold)
        flagged = (probs >= threshold).astype(int)
        _, fp, _, tp = skm.confusion_matrix(labels, flagged, labels=[0, 1]).ravel()
        model.append(float(tp / n - fp / n * odds) if n else 0.0)
        treat_all.append(prevalence - (1.0 - prevalence) * odds)
    return DecisionCurve(
        thresholds=[float(t) for t in DECISION_THRESHOLDS],
        model=model,
        treat_all=treat_all,
        treat_none=[0.0] * len(DECISION_THRESHOLDS),
    )
