"""Validation numbers against scikit-learn and against cases whose answer is known."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fedcare.client.model_use.operating_point import Target, choose_threshold
from fedcare.shared.calibration import calibration, decision_curve
from fedcare.shared.errors import FedcareError
from fedcare.shared.tasks import Task, TaskKind
from fedcare.shared.validation_metrics import metric_intervals, validation_metrics

BINARY = Task(TaskKind.BINARY, positive_label="malignant")


def _scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    probs = np.clip(0.3 * labels + 0.7 * rng.random(n), 0.0, 1.0)
    return labels, probs


def test_binary_metrics_at_a_threshold_match_scikit_learn() -> None:
    labels, probs = _scores()
    found = validation_metrics(BINARY, labels, probs, threshold=0.6)
    predicted = (probs >= 0.6).astype(int)
    assert found["auroc"] == pytest.approx(skm.roc_auc_score(labels, probs))
    assert found["auprc"] == pytest.approx(skm.average_precision_score(labels, probs))
    assert found["sensitivity"] == pytest.approx(skm.recall_score(labels, predicted))
    assert found["specificity"] == pytest.approx(skm.recall_score(labels, predicted, pos_label=0))
    assert found["ppv"] == pytest.approx(skm.precision_score(labels, predicted))
    assert found["npv"] == pytest.approx(skm.precision_score(labels, predicted, pos_label=0))
    assert found["brier"] == pytest.approx(skm.brier_score_loss(labels, probs))
    assert found["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert found["f1"] == pytest.approx(skm.f1_score(labels, predicted))


def test_intervals_hold_the_value_and_narrow_with_more_patients() -> None:
    small = metric_intervals(BINARY, *_scores(100), resamples=100)
    large = metric_intervals(BINARY, *_scores(2000), resamples=100)
    for intervals in (small, large):
        auroc = intervals["auroc"]
        assert auroc.low <= auroc.value <= auroc.high
    width = {name: i["auroc"].high - i["auroc"].low for name, i in (("s", small), ("l", large))}
    assert width["l"] < width["s"]


def test_intervals_are_reproducible_and_undefined_metrics_stay_nan() -> None:
    labels, probs = _scores(60)
    first = metric_intervals(BINARY, labels, probs, resamples=50, seed=3)
    assert first == metric_intervals(BINARY, labels, probs, resamples=50, seed=3)
    only_negatives = metric_intervals(BINARY, np.zeros(30, dtype=int), probs[:30], resamples=20)
    assert math.isnan(only_negatives["auroc"].value)
    assert math.isnan(only_negatives["sensitivity"].low)


def test_a_sensitivity_target_picks_the_highest_threshold_that_reaches_it() -> None:
    labels, probs = _scores(1000, seed=1)
    point = choose_threshold(labels, probs, Target.SENSITIVITY, 0.8)
    assert point.validation_sensitivity >= 0.8
    # Any higher threshold among the scores misses the target.
    higher = probs[probs > point.threshold].min()
    assert np.mean(probs[labels == 1] >= higher) < 0.8


def test_a_specificity_target_picks_the_lowest_threshold_that_reaches_it() -> None:
    labels, probs = _scores(1000, seed=2)
    point = choose_threshold(labels, probs, Target.SPECIFICITY, 0.9)
    assert point.validation_specificity >= 0.9
    lower = probs[probs < point.threshold].max()
    assert np.mean(probs[labels == 0] < lower) < 0.9


def test_a_threshold_needs_both_classes_in_the_validation_rows() -> None:
    with pytest.raises(FedcareError, match="one class only"):
        choose_threshold(np.zeros(10, dtype=int), np.linspace(0, 1, 10), Target.SENSITIVITY, 0.8)


def test_perfectly_calibrated_probabilities_have_a_small_ece_and_a_shifted_one_a_large() -> None:
    rng = np.random.default_rng(4)
    probs = rng.random(20000)
    labels = (rng.random(20000) < probs).astype(int)
    assert calibration(BINARY, labels, probs).ece < 0.02
    shifted = calibration(BINARY, labels, np.clip(probs + 0.2, 0, 1))
    assert shifted.ece > 0.15
    assert sum(shifted.counts) == 20000


def test_net_benefit_of_a_perfect_model_is_the_prevalence_and_treat_none_is_zero() -> None:
    labels = np.array([1] * 30 + [0] * 70)
    perfect = labels.astype(float)
    curve = decision_curve(labels, perfect)
    assert curve.model == pytest.approx([0.3] * len(curve.thresholds))
    assert curve.treat_none == [0.0] * len(curve.thresholds)
    # Treating everyone at threshold t: prevalence - (1 - prevalence) * t / (1 - t).
    assert curve.treat_all[49] == pytest.approx(0.3 - 0.7 * 0.5 / 0.5)
