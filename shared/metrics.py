"""Clinical metrics, computed with scikit-learn.

Binary diagnosis reports AUROC, accuracy, sensitivity, specificity, F1 and the
Brier score at a 0.5 decision threshold; regression reports MAE, RMSE and R²;
survival reports Harrell's C-index (lifelines); an autoencoder its reconstruction
error; treatment recommendation the hit-rate@5 and NDCG@5 of a held-out response.
A metric that is undefined on the given data (AUROC with one class present,
sensitivity with no positives) is ``nan``, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from fedcare.shared.keys import MetricName
from fedcare.shared.tasks import Task, TaskKind

DECISION_THRESHOLD = 0.5
RANKING_CUTOFF = 5
"""k of hit-rate@k and NDCG@k: how many suggested treatments a clinician would read."""


BINARY_METRICS = (
    MetricName.AUROC,
    MetricName.ACCURACY,
    MetricName.SENSITIVITY,
    MetricName.SPECIFICITY,
    MetricName.F1,
    MetricName.BRIER,
)
MULTICLASS_METRICS = (MetricName.AUROC, MetricName.ACCURACY, MetricName.F1)
REGRESSION_METRICS = (MetricName.MAE, MetricName.RMSE, MetricName.R2)
SURVIVAL_METRICS = (MetricName.C_INDEX,)
RECONSTRUCTION_METRICS = (MetricName.RECONSTRUCTION_MSE, MetricName.RECONSTRUCTION_MAE)
RECOMMENDATION_METRICS = (MetricName.HIT_RATE, MetricName.NDCG)

LOWER_IS_BETTER = frozenset(
    {
        MetricName.BRIER,
        MetricName.MAE,
        MetricName.RMSE,
        MetricName.RECONSTRUCTION_MSE,
        MetricName.RECONSTRUCTION_MAE,
    }
)
"""Metrics that are errors: a better model has a smaller value."""

_METRICS_BY_KIND = {
    TaskKind.BINARY: BINARY_METRICS,
    TaskKind.MULTICLASS: MULTICLASS_METRICS,
    TaskKind.REGRESSION: REGRESSION_METRICS,
    TaskKind.SURVIVAL: SURVIVAL_METRICS,
    TaskKind.RECONSTRUCTION: RECONSTRUCTION_METRICS,
    TaskKind.RECOMMENDATION: RECOMMENDATION_METRICS,
}


def metric_names(task: Task) -> tuple[MetricName, ...]:
    """Metrics reported for ``task``, headline metric first."""
    return _METRICS_BY_KIND[task.kind]


def compute_metrics(task: Task, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Compute the task's metrics.

    Parameters
    ----------
    task : Task
        The task the scores answer.
    y_true : np.ndarray
        True labels (0/1 for binary, class index for multiclass), regression
        targets, (time bin, event) rows for survival, the inputs themselves for
        reconstruction, or for recommendation each evaluated patient's held-out
        treatment index.
    scores : np.ndarray
        :meth:`shared.tasks.Task.scores` output for the same rows; for
        recommendation ``(n, treatments)`` scores of every treatment for each
        patient, ``-inf`` for those that are no candidates
        (:func:`shared.evaluation.candidate_scores`).

    Returns
    -------
    dict[str, float]
        Metric name to value, in :func:`metric_names` order.
    """
    if task.kind is TaskKind.RECOMMENDATION:
        return _recommendation(y_true.astype(int), scores)
    if not np.all(np.isfinite(scores)):
        # A diverged model has no score; say so rather than fail the whole report.
        return dict.fromkeys((name.value for name in metric_names(task)), math.nan)
    if task.kind is TaskKind.BINARY:
        return _binary(y_true.astype(int), scores)
    if task.kind is TaskKind.MULTICLASS:
        return _multiclass(y_true.astype(int), scores, task.num_classes)
    if task.kind is TaskKind.SURVIVAL:
        return _survival(y_true, scores)
    if task.kind is TaskKind.RECONSTRUCTION:
        return _reconstruction(y_true, scores)
    return _regression(y_true, scores)


def _binary(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    predicted = (probs >= DECISION_THRESHOLD).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, predicted, labels=[0, 1]).ravel()
    both_classes = len(np.unique(y_true)) == 2
    return {
        MetricName.AUROC.value: float(skm.roc_auc_score(y_true, probs))
        if both_classes
        else math.nan,
        MetricName.ACCURACY.value: float(skm.accuracy_score(y_true, predicted)),
        MetricName.SENSITIVITY.value: _ratio(tp, tp + fn),
        MetricName.SPECIFICITY.value: _ratio(tn, tn + fp),
        MetricName.F1.value: float(skm.f1_score(y_true, predicted, zero_division=0.0)),
        MetricName.BRIER.value: float(skm.brier_score_loss(y_true, probs)),
    }


def _multiclass(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> dict[str, float]:
    predicted = probs.argmax(axis=1)
    labels = list(range(num_classes))
    all_present = len(np.unique(y_true)) == num_classes
    auroc = (
        float(skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels))
        if all_present
        else math.nan
    )
    return {
        MetricName.AUROC.value: auroc,
        MetricName.ACCURACY.value: float(skm.accuracy_score(y_true, predicted)),
        MetricName.F1.value: float(
            skm.f1_score(y_true, predicted, average="macro", labels=labels, zero_division=0.0)
        ),
    }


def _regression(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        MetricName.MAE.value: float(skm.mean_absolute_error(y_true, predicted)),
        MetricName.RMSE.value: float(np.sqrt(skm.mean_squared_error(y_true, predicted))),
        MetricName.R2.value: float(skm.r2_score(y_true, predicted))
        if len(y_true) > 1
        else math.nan,
    }


def _survival(y_true: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    from lifelines.utils import concordance_index  # only survival runs pay its import

    times, events = y_true[:, 0], y_true[:, 1]
    try:
        # lifelines ranks by predicted survival time: higher risk means shorter.
        c_index = float(concordance_index(times, -risk, events))
    except ZeroDivisionError:  # no comparable pair: no events, or all tied
        c_index = math.nan
    return {MetricName.C_INDEX.value: c_index}


def _reconstruction(inputs: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
    error = reconstructed - inputs
    return {
        MetricName.RECONSTRUCTION_MSE.value: float(np.mean(error**2)),
        MetricName.RECONSTRUCTION_MAE.value: float(np.mean(np.abs(error))),
    }


def held_out_ranks(scores: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """1-based rank of each row's held-out item among that row's candidates.

    Candidates are the finite scores (``-inf`` marks a non-candidate). A tie counts
    against the held-out item, so a model that scores everything alike ranks it
    last rather than first.
    """
    target = scores[np.arange(len(held_out)), held_out]
    ranks: np.ndarray = (scores >= target[:, None]).sum(axis=1)
    return ranks


def _recommendation(held_out: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    if np.isnan(scores).any() or np.isposinf(scores).any():
        return dict.fromkeys((name.value for name in RECOMMENDATION_METRICS), math.nan)
    # From ranks rather than sklearn's ndcg_score: each patient has its own
    # candidate set. With one relevant item the ideal DCG is 1, so NDCG@k is
    # 1 / log2(rank + 1) within the cut-off.
    ranks = held_out_ranks(scores, held_out)
    hits = ranks <= RANKING_CUTOFF
    return {
        MetricName.HIT_RATE.value: float(hits.mean()),
        MetricName.NDCG.value: float(np.where(hits, 1.0 / np.log2(ranks + 1.0), 0.0).mean()),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator else math.nan


def weighted_mean(
    values: Sequence[Mapping[str, float]], weights: Sequence[float]
) -> dict[str, float]:
    """Average metric maps, weighting each by its sample count.

    A metric missing or ``nan`` in one map is averaged over the maps that have it.

    Raises
    ------
    ValueError
        If ``values`` is empty or the weights do not sum to a positive number.
    """
    if not values or sum(weights) <= 0:
        raise ValueError("weighted_mean needs at least one entry with a positive weight")
    names = list(dict.fromkeys(name for value in values for name in value))
    averaged = {}
    for name in names:
        pairs = [
            (value[name], weight)
            for value, weight in zip(values, weights, strict=True)
            if not math.isnan(value.get(name, math.nan))
        ]
        total = sum(weight for _, weight in pairs)
        averaged[name] = sum(v * w for v, w in pairs) / total if total > 0 else math.nan
    return averaged
