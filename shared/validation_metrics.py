"""A model's metrics at a chosen operating threshold, with bootstrap confidence intervals.

:mod:`shared.metrics` scores a model during training at the fixed 0.5 threshold.
A clinical validation needs more: AUPRC beside AUROC (for rare outcomes the
precision-recall curve is the honest one), the positive and negative predictive
values, every threshold-dependent metric at the operating threshold the site
chose, and a 95% confidence interval for each. Metrics come from scikit-learn;
the intervals from SciPy's bootstrap (percentile method, patients resampled
with replacement, every metric from the same resamples).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from fedcare.shared.metrics import compute_metrics
from fedcare.shared.tasks import Task, TaskKind

AUPRC = "auprc"
PPV = "ppv"
NPV = "npv"

BINARY_VALIDATION_METRICS = (
    "auroc",
    AUPRC,
    "accuracy",
    "sensitivity",
    "specificity",
    PPV,
    NPV,
    "f1",
    "brier",
)
"""Binary metrics of a validation, headline first: AUROC and AUPRC need no threshold."""

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A metric's value and its confidence interval (``nan`` when undefined)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        """Return a JSON-ready dict; an undefined number becomes ``None``."""
        return {
            name: (number if math.isfinite(number) else None)
            for name, number in (("value", self.value), ("low", self.low), ("high", self.high))
        }


def validation_metrics(
    task: Task, y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Compute the task's validation metrics; binary ones at ``threshold``.

    Parameters
    ----------
    task : Task
        Binary, multiclass or regression.
    y_true : np.ndarray
        0/1 labels (binary), class indices (multiclass) or targets (regression).
    scores : np.ndarray
        :meth:`shared.tasks.Task.scores` of the same rows.
    threshold : float
        Binary only: a probability at or above it predicts the positive class.

    Returns
    -------
    dict[str, float]
        Metric name to value; ``nan`` where undefined (AUROC with one class present).
    """
    if task.kind is TaskKind.BINARY:
        if not np.all(np.isfinite(scores)):
            # A diverged model has no score; say so rather than fail the whole report.
            return dict.fromkeys(BINARY_VALIDATION_METRICS, math.nan)
        return _binary(y_true.astype(int), scores, threshold)
    return compute_metrics(task, y_true, scores)


def _binary(y_true: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    # The threshold metrics are ratios of the four confusion counts, counted directly:
    # the bootstrap evaluates them a thousand times, and scikit-learn's per-call input
    # checks would dominate its cost (tests compare every ratio with scikit-learn).
    positive, predicted = y_true == 1, probs >= threshold
    tp = int(np.count_nonzero(positive & predicted))
    fp = int(np.count_nonzero(~positive & predicted))
    fn = int(np.count_nonzero(positive & ~predicted))
    tn = len(y_true) - tp - fp - fn
    both = 0 < tp + fn < len(y_true)
    return {
        "auroc": float(skm.roc_auc_score(y_true, probs)) if both else math.nan,
        AUPRC: float(skm.average_precision_score(y_true, probs)) if both else math.nan,
        "accuracy": _ratio(tp + tn, len(y_true)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        PPV: _ratio(tp, tp + fp),
        NPV: _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "brier": float(skm.brier_score_loss(y_true, probs, pos_label=1)),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator else math.nan


def metric_intervals(
    task: Task,
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    threshold: float = 0.5,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Compute each validation metric with its 95% bootstrap confidence interval.

    Patients are resampled with replacement (``resamples`` times, seeded); each
    resample is scored with :func:`validation_metrics` at the same threshold. A
    resample where a metric is undefined (one class drawn) is left out of that
    metric's interval.

    Returns
    -------
    dict[str, Interval]
        Metric name to its value on all rows and its interval.
    """
    point = validation_metrics(task, y_true, scores, threshold)
    names = list(point)
    if len(y_true) < 2 or resamples < 1:
        return {name: Interval(point[name], math.nan, math.nan) for name in names}

    def statistic(rows: np.ndarray) -> np.ndarray:
        values = validation_metrics(task, y_true[rows], scores[rows], threshold)
        return np.array([values[name] for name in names])

    with warnings.catch_warnings():
        # A resample with one class makes scikit-learn warn; that metric is nan there.
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (np.arange(len(y_true)),),
            statistic,
            vectorized=False,
            n_resamples=resamples,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    distribution = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    intervals = {}
    for position, name in enumerate(names):
        drawn = distribution[position]
        drawn = drawn[np.isfinite(drawn)]
        low, high = (
            np.percentile(drawn, [tail, 100.0 - tail]) if len(drawn) else (math.nan, math.nan)
        )
        intervals[name] = Interval(point[name], float(low), float(high))
    return intervals
