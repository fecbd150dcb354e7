"""Clinical metrics against scikit-learn and hand-counted confusion matrices."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fedcare.shared.metrics import compute_metrics, weighted_mean
from fedcare.shared.tasks import Task, TaskKind

BINARY = Task(TaskKind.BINARY)


def test_binary_metrics_match_sklearn_and_hand_counts() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    probs = np.clip(y * 0.6 + rng.normal(0.2, 0.25, 200), 0, 1)
    result = compute_metrics(BINARY, y.astype(float), probs)
    predicted = (probs >= 0.5).astype(int)
    tp = int(((predicted == 1) & (y == 1)).sum())
    tn = int(((predicted == 0) & (y == 0)).sum())
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(y, probs))
    assert result["accuracy"] == pytest.approx((tp + tn) / len(y))
    assert result["sensitivity"] == pytest.approx(tp / (y == 1).sum())
    assert result["specificity"] == pytest.approx(tn / (y == 0).sum())
    assert result["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert result["brier"] == pytest.approx(np.mean((probs - y) ** 2))
    assert list(result) == ["auroc", "accuracy", "sensitivity", "specificity", "f1", "brier"]
    assert all(type(key) is str for key in result)


def test_undefined_metrics_are_nan_not_invented() -> None:
    result = compute_metrics(BINARY, np.zeros(5), np.array([0.1, 0.2, 0.7, 0.3, 0.4]))
    assert math.isnan(result["auroc"])
    assert math.isnan(result["sensitivity"])
    assert result["specificity"] == pytest.approx(0.8)


def test_regression_metrics_match_sklearn() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.5, 2.0, 2.5, 5.0])
    result = compute_metrics(Task(TaskKind.REGRESSION), y, predicted)
    assert result["mae"] == pytest.approx(skm.mean_absolute_error(y, predicted))
    assert result["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, predicted)))
    assert result["r2"] == pytest.approx(skm.r2_score(y, predicted))


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    probs[np.arange(90), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    result = compute_metrics(Task(TaskKind.MULTICLASS, num_classes=3), y, probs)
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(axis=1)))


def test_weighted_mean_weights_by_rows_and_skips_nan_and_missing() -> None:
    averaged = weighted_mean(
        [{"auroc": 0.9, "accuracy": 0.8}, {"auroc": math.nan, "accuracy": 0.5}, {"accuracy": 1.0}],
        [100, 300, 100],
    )
    assert averaged["auroc"] == pytest.approx(0.9)
    assert averaged["accuracy"] == pytest.approx((80 + 150 + 100) / 500)
    assert np.average([0.8, 0.5, 1.0], weights=[100, 300, 100]) == pytest.approx(
        averaged["accuracy"]
    )
    with pytest.raises(ValueError):
        weighted_mean([], [])
