"""Evaluation metrics a hospital may release: computed from differentially private sums.

A hospital never releases a metric computed on its rows directly. Each evaluated
row contributes one vector of bounded statistics (a one-hot cell of a score
histogram, clipped errors); every vector is clipped to the L2 norm ``S`` of its
design (the sensitivity: what adding or removing one row can change), the
vectors are summed and Gaussian noise of standard deviation ``sigma * S`` is
added to every sum. That is the Gaussian mechanism, booked in the hospital's
privacy ledger as the RDP entry ``(sigma, sample rate 1, 1 step)``
(:meth:`shared.privacy.DpSgdPlan.evaluation_entry`). Every metric is then
computed from the noisy sums alone (post-processing costs no privacy), by the
hospital or by anyone holding the sums.

What each task releases (``B`` = :data:`SCORE_BINS` equal-width probability bins):

* binary: the ``2 x B`` histogram of (class, predicted probability bin); AUROC
  from the binned ROC (rows in one bin count as ties), accuracy, sensitivity,
  specificity and F1 at 0.5 (a bin edge), Brier with each bin's midpoint.
* multiclass (``C`` classes): the ``C x C`` confusion matrix and, per class, the
  ``2 x B`` histogram of its one-vs-rest probability (``S = sqrt(C + 1)``);
  accuracy, macro F1 and macro one-vs-rest AUROC.
* regression: sums of 1, ``|e|``, ``e^2``, ``y`` and ``y^2`` in the target's
  federation-fixed scale, errors and targets clipped to :data:`VALUE_CLIP` scales
  (``S = sqrt(5)``); MAE, RMSE, R^2.
* survival: the histogram of (risk bin, time bin, event); Harrell's C-index
  from it (risk ties within a bin count one half).
* reconstruction and recommendation: sums of 1 and of each row's bounded
  errors or hit and NDCG (``S = sqrt(3)``).

No metric is ever computed from exact counts, so none of them is released
without noise; the exact evaluation loss is not released at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedcare.shared.keys import NOISY_SUM_KEY, MetricName, noisy_sum_key
from fedcare.shared.metrics import DECISION_THRESHOLD, RANKING_CUTOFF, held_out_ranks
from fedcare.shared.tasks import Task, TaskKind

SCORE_BINS = 6
"""Equal-width bins of a predicted probability (0.5, the decision threshold, is an edge).

Fewer bins mean less noise in every metric (each sums fewer noisy cells) and a
coarser AUROC (rows within a bin count as ties, which can only lower it). Six keeps
that bias to about 0.01 for a model of AUROC 0.9, while the noise of a small
hospital's release stays about half that of ten bins."""
RISK_BINS = 6
"""Equal-width bins of a survival risk score over its range ``[-time bins, 0]``."""
VALUE_CLIP = 4.0
"""Regression errors and targets are clipped to this many federation scales."""

_THRESHOLD_BIN = int(DECISION_THRESHOLD * SCORE_BINS)


@dataclass(frozen=True)
class StatisticsDesign:
    """What one evaluated row contributes, and how far one row can move the sums.

    Attributes
    ----------
    width : int
        Length of each row's statistics vector.
    sensitivity : float
        L2 norm every row's vector is clipped to: the most one row's presence
        changes the sums, so the noise is ``noise multiplier x sensitivity``.
    """

    width: int
    sensitivity: float


def statistics_design(task: Task) -> StatisticsDesign:
    """Return the release design of ``task`` (see the module docstring)."""
    if task.kind is TaskKind.BINARY:
        return StatisticsDesign(2 * SCORE_BINS, 1.0)
    if task.kind is TaskKind.MULTICLASS:
        classes = task.num_classes
        return StatisticsDesign(
            classes * classes + classes * 2 * SCORE_BINS, math.sqrt(classes + 1)
        )
    if task.kind is TaskKind.REGRESSION:
        return StatisticsDesign(5, math.sqrt(5))
    if task.kind is TaskKind.SURVIVAL:
        return StatisticsDesign(RISK_BINS * task.num_classes * 2, 1.0)
    return StatisticsDesign(3, math.sqrt(3))


def row_statistics(task: Task, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each evaluated row's statistics vector, ``(rows, width)`` float64.

    ``truth`` and ``scores`` are what :func:`shared.metrics.compute_metrics`
    takes. Non-finite scores (a diverged model) are scored as the least
    informative value, never dropped: which rows diverge must not matter.
    """
    if task.kind is TaskKind.BINARY:
        return _binary_rows(truth.astype(int), _probabilities(scores))
    if task.kind is TaskKind.MULTICLASS:
        return _multiclass_rows(truth.astype(int), _probabilities(scores), task.num_classes)
    if task.kind is TaskKind.REGRESSION:
        return _regression_rows(task, truth, scores)
    if task.kind is TaskKind.SURVIVAL:
        return _survival_rows(truth, scores, task.num_classes)
    if task.kind is TaskKind.RECONSTRUCTION:
        return _reconstruction_rows(truth, scores)
    return _recommendation_rows(truth.astype(int), scores)


def noisy_sums(
    rows: np.ndarray,
    design: StatisticsDesign,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Clip every row to the design's sensitivity, sum, and add Gaussian noise.

    Parameters
    ----------
    rows : np.ndarray
        ``(rows, width)`` statistics from :func:`row_statistics`.
    design : StatisticsDesign
        Its width and sensitivity.
    noise_multiplier : float
        Noise std divided by the sensitivity (the plan's evaluation noise).
    rng : np.random.Generator | None
        Noise source; by default a fresh generator seeded from the operating
        system's entropy, so the noise of one release tells nothing of another's.
    """
    rng = rng if rng is not None else np.random.default_rng()
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    clipped = rows * np.minimum(1.0, design.sensitivity / np.maximum(norms, 1e-12))
    noise = rng.normal(0.0, noise_multiplier * design.sensitivity, size=design.width)
    released: np.ndarray = clipped.sum(axis=0) + noise
    return released


def released_count(task: Task, sums: np.ndarray) -> float:
    """Return the (noisy) number of evaluated rows the sums describe."""
    if task.kind is TaskKind.MULTICLASS:
        return float(sums[: task.num_classes**2].sum())
    if task.kind in (TaskKind.BINARY, TaskKind.SURVIVAL):
        return float(sums.sum())
    return float(sums[0])


def metrics_from_sums(task: Task, sums: np.ndarray) -> dict[str, float]:
    """Compute the task's metrics from (noisy) sums alone; ``nan`` where undefined."""
    if task.kind is TaskKind.BINARY:
        return _binary_metrics(sums)
    if task.kind is TaskKind.MULTICLASS:
        return _multiclass_metrics(sums, task.num_classes)
    if task.kind is TaskKind.REGRESSION:
        return _regression_metrics(task, sums)
    if task.kind is TaskKind.SURVIVAL:
        return _survival_metrics(sums, task.num_classes)
    names = (
        (MetricName.RECONSTRUCTION_MSE, MetricName.RECONSTRUCTION_MAE)
        if task.kind is TaskKind.RECONSTRUCTION
        else (MetricName.HIT_RATE, MetricName.NDCG)
    )
    count = sums[0]
    return {name.value: _unit(_ratio(sums[i + 1], count)) for i, name in enumerate(names)}


def sums_as_reply(sums: np.ndarray) -> dict[str, float]:
    """Return the noisy sums as reply scalars (``noisy-sum-000``, ...), for others to pool."""
    return {noisy_sum_key(index): float(value) for index, value in enumerate(sums)}


def sums_from_reply(reply: Mapping[str, object]) -> np.ndarray | None:
    """Return the noisy sums a reply carries, in order (``None`` when it carries none)."""
    keys = sorted(key for key in reply if NOISY_SUM_KEY.fullmatch(key))
    if not keys or keys != [noisy_sum_key(index) for index in range(len(keys))]:
        return None
    return np.array([float(reply[key]) for key in keys])  # type: ignore[arg-type]


def pooled_metrics(task: Task, replies: Sequence[Mapping[str, object]]) -> dict[str, float] | None:
    """Metrics of several hospitals' rows together, from the sum of their noisy sums.

    Summing noisy sums is post-processing: the pooled metrics cost no privacy, and
    their noise is that of all hospitals together rather than of the smallest one.
    ``None`` unless every reply carries sums of the task's design.
    """
    width = statistics_design(task).width
    sums = [sums_from_reply(reply) for reply in replies]
    if not sums or any(found is None or len(found) != width for found in sums):
        return None
    return metrics_from_sums(task, np.sum(np.stack(sums), axis=0))  # type: ignore[arg-type]


# --- rows ---------------------------------------------------------------------


def _probabilities(scores: np.ndarray) -> np.ndarray:
    finite = np.nan_to_num(scores.astype(np.float64), nan=0.5, posinf=1.0, neginf=0.0)
    clipped: np.ndarray = np.clip(finite, 0.0, 1.0)
    return clipped


def _score_bins(probabilities: np.ndarray) -> np.ndarray:
    bins: np.ndarray = np.minimum((probabilities * SCORE_BINS).astype(int), SCORE_BINS - 1)
    return bins


def _one_hot(cells: np.ndarray, width: int) -> np.ndarray:
    rows = np.zeros((len(cells), width))
    rows[np.arange(len(cells)), cells] = 1.0
    return rows


def _binary_rows(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    return _one_hot(labels * SCORE_BINS + _score_bins(probabilities), 2 * SCORE_BINS)


def _multiclass_rows(labels: np.ndarray, probabilities: np.ndarray, classes: int) -> np.ndarray:
    confusion = _one_hot(labels * classes + probabilities.argmax(axis=1), classes * classes)
    per_class = [
        _binary_rows((labels == k).astype(int), probabilities[:, k]) for k in range(classes)
    ]
    return np.concatenate([confusion, *per_class], axis=1)


def _regression_rows(task: Task, targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    truth = (targets.astype(np.float64) - task.target_center) / task.target_scale
    guess = (np.nan_to_num(predicted.astype(np.float64)) - task.target_center) / task.target_scale
    error = np.clip(guess - truth, -VALUE_CLIP, VALUE_CLIP) / VALUE_CLIP
    truth = np.clip(truth, -VALUE_CLIP, VALUE_CLIP) / VALUE_CLIP
    return np.stack([np.ones_like(truth), np.abs(error), error**2, truth, truth**2], axis=1)


def _survival_rows(labels: np.ndarray, risk: np.ndarray, time_bins: int) -> np.ndarray:
    # Risk is minus the expected bins survived, so it lies in [-time_bins, 0].
    position = (np.nan_to_num(risk.astype(np.float64)) + time_bins) / time_bins
    risk_bin = np.clip((position * RISK_BINS).astype(int), 0, RISK_BINS - 1)
    time_bin = np.clip(labels[:, 0].astype(int), 0, time_bins - 1)
    event = (labels[:, 1] > 0.5).astype(int)
    cells = (risk_bin * time_bins + time_bin) * 2 + event
    return _one_hot(cells, RISK_BINS * time_bins * 2)


def _reconstruction_rows(inputs: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
    error = np.nan_to_num(reconstructed.astype(np.float64), nan=1.0) - inputs
    per_row = error.reshape(len(error), -1)
    squared = np.clip((per_row**2).mean(axis=1), 0, 1)
    absolute = np.clip(np.abs(per_row).mean(axis=1), 0, 1)
    return np.stack([np.ones(len(error)), squared, absolute], axis=1)


def _recommendation_rows(held_out: np.ndarray, scores: np.ndarray) -> np.ndarray:
    ranks = held_out_ranks(scores, held_out)
    hits = (ranks <= RANKING_CUTOFF) & ~np.isnan(scores).any(axis=1)  # a diverged row misses
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 1.0), 0.0)
    return np.stack([np.ones(len(ranks)), hits.astype(float), ndcg], axis=1)


# --- metrics ------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else math.nan


def _unit(value: float) -> float:
    """Clamp a noisy estimate of a quantity that lives in [0, 1] (post-processing)."""
    return value if math.isnan(value) else min(max(value, 0.0), 1.0)


def _auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    above = np.cumsum(positives[::-1])[::-1] - positives  # positives in higher bins
    pairs = float((negatives * (above + 0.5 * positives)).sum())
    return _unit(_ratio(pairs, float(positives.sum()) * float(negatives.sum())))


def _binary_metrics(sums: np.ndarray) -> dict[str, float]:
    negatives, positives = sums[:SCORE_BINS], sums[SCORE_BINS:]
    tp, fn = positives[_THRESHOLD_BIN:].sum(), positives[:_THRESHOLD_BIN].sum()
    tn, fp = negatives[:_THRESHOLD_BIN].sum(), negatives[_THRESHOLD_BIN:].sum()
    middles = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS
    squared = float((positives * (1 - middles) ** 2 + negatives * middles**2).sum())
    total = float(sums.sum())
    return {
        MetricName.AUROC.value: _auroc(positives, negatives),
        MetricName.ACCURACY.value: _unit(_ratio(tp + tn, total)),
        MetricName.SENSITIVITY.value: _unit(_ratio(tp, tp + fn)),
        MetricName.SPECIFICITY.value: _unit(_ratio(tn, tn + fp)),
        MetricName.F1.value: _unit(_ratio(2 * tp, 2 * tp + fp + fn)),
        MetricName.BRIER.value: _unit(_ratio(squared, total)),
    }


def _multiclass_metrics(sums: np.ndarray, classes: int) -> dict[str, float]:
    confusion = sums[: classes * classes].reshape(classes, classes)
    histograms = sums[classes * classes :].reshape(classes, 2, SCORE_BINS)
    true_positive = np.diag(confusion)
    f1 = [
        _ratio(2 * true_positive[k], confusion[k].sum() + confusion[:, k].sum())
        for k in range(classes)
    ]
    auroc = [_auroc(histograms[k, 1], histograms[k, 0]) for k in range(classes)]
    return {
        MetricName.AUROC.value: _unit(float(np.mean(auroc))),
        MetricName.ACCURACY.value: _unit(_ratio(true_positive.sum(), confusion.sum())),
        MetricName.F1.value: _unit(float(np.mean(f1))),
    }


def _regression_metrics(task: Task, sums: np.ndarray) -> dict[str, float]:
    count, absolute, squared, total, total_squared = sums
    scale = task.target_scale
    mse = _ratio(squared, count) * (VALUE_CLIP * scale) ** 2
    spread = (total_squared - _ratio(total**2, count)) * VALUE_CLIP**2
    return {
        MetricName.MAE.value: max(_ratio(absolute, count) * VALUE_CLIP * scale, 0.0),
        MetricName.RMSE.value: math.sqrt(max(mse, 0.0)),
        MetricName.R2.value: 1.0 - _ratio(squared * VALUE_CLIP**2, spread),
    }


def _survival_metrics(sums: np.ndarray, time_bins: int) -> dict[str, float]:
    cells = sums.reshape(RISK_BINS, time_bins, 2)
    everyone, deaths = cells.sum(axis=2), cells[:, :, 1]
    concordant = comparable = 0.0
    for time in range(time_bins):
        later = everyone[:, time + 1 :].sum(axis=1)  # per risk bin, alive after `time`
        lower = np.cumsum(later) - later  # later rows with a lower risk bin
        concordant += float((deaths[:, time] * (lower + 0.5 * later)).sum())
        comparable += float((deaths[:, time] * later.sum()).sum())
    return {MetricName.C_INDEX.value: _unit(_ratio(concordant, comparable))}
