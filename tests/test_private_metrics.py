"""Evaluation releases: bounded per-row statistics, Gaussian noise, metrics from noisy sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fedcare.shared.metrics import compute_metrics
from fedcare.shared.private_metrics import (
    SCORE_BINS,
    metrics_from_sums,
    noisy_sums,
    pooled_metrics,
    released_count,
    row_statistics,
    statistics_design,
    sums_as_reply,
    sums_from_reply,
)
from fedcare.shared.tasks import Task, TaskKind

BINARY = Task(TaskKind.BINARY)
MULTICLASS = Task(TaskKind.MULTICLASS, num_classes=3)
REGRESSION = Task(TaskKind.REGRESSION, target_center=150.0, target_scale=75.0)
SURVIVAL = Task(TaskKind.SURVIVAL, num_classes=7)
RECONSTRUCTION = Task(TaskKind.RECONSTRUCTION)
RECOMMENDATION = Task(TaskKind.RECOMMENDATION)


def _examples(task: Task, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(truth, scores) of ``n`` rows, shaped as each task's evaluation produces them."""
    if task.kind is TaskKind.BINARY:
        labels = rng.integers(0, 2, n)
        return labels, np.clip(labels * 0.6 + rng.uniform(0, 0.4, n), 0, 1)
    if task.kind is TaskKind.MULTICLASS:
        return rng.integers(0, 3, n), rng.dirichlet(np.ones(3), n)
    if task.kind is TaskKind.REGRESSION:
        truth = rng.uniform(25, 346, n)
        return truth, truth + rng.normal(0, 40, n)
    if task.kind is TaskKind.SURVIVAL:
        labels = np.stack([rng.integers(0, 7, n), rng.integers(0, 2, n)], axis=1)
        return labels.astype(float), -rng.uniform(0, 7, n)
    if task.kind is TaskKind.RECONSTRUCTION:
        images = rng.uniform(0, 1, (n, 1, 4, 4))
        return images, images + rng.normal(0, 0.1, images.shape)
    scores = rng.normal(0, 1, (n, 20))
    return rng.integers(0, 20, n), scores


TASKS = [BINARY, MULTICLASS, REGRESSION, SURVIVAL, RECONSTRUCTION, RECOMMENDATION]


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.kind.value)
def test_one_row_moves_the_sums_by_at_most_the_sensitivity(task: Task) -> None:
    rng = np.random.default_rng(0)
    truth, scores = _examples(task, 60, rng)
    rows = row_statistics(task, truth, scores)
    design = statistics_design(task)
    assert rows.shape == (60, design.width)
    # Adding or removing any one row changes the (clipped) sum by its own norm.
    assert np.linalg.norm(rows, axis=1).max() <= design.sensitivity + 1e-9


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.kind.value)
def test_the_noise_is_gaussian_with_std_noise_multiplier_times_sensitivity(task: Task) -> None:
    rng = np.random.default_rng(1)
    truth, scores = _examples(task, 30, rng)
    rows = row_statistics(task, truth, scores)
    design = statistics_design(task)
    noise = np.stack([noisy_sums(rows, design, 2.0, rng) - rows.sum(axis=0) for _ in range(400)])
    assert noise.mean() == pytest.approx(0.0, abs=0.1 * design.sensitivity)
    assert noise.std() == pytest.approx(2.0 * design.sensitivity, rel=0.05)


def test_a_row_beyond_the_sensitivity_is_clipped_before_summing() -> None:
    design = statistics_design(REGRESSION)
    rows = np.full((1, design.width), 10.0)
    clipped = noisy_sums(rows, design, 1e-12, np.random.default_rng(0))
    assert np.linalg.norm(clipped) == pytest.approx(design.sensitivity)


def test_noiseless_binary_sums_give_the_exact_threshold_metrics() -> None:
    rng = np.random.default_rng(2)
    labels, probabilities = _examples(BINARY, 200, rng)
    exact = compute_metrics(BINARY, labels, probabilities)
    released = metrics_from_sums(BINARY, row_statistics(BINARY, labels, probabilities).sum(axis=0))
    for name in ("accuracy", "sensitivity", "specificity", "f1"):  # 0.5 is a bin edge
        assert released[name] == pytest.approx(exact[name], abs=1e-12)
    # AUROC and Brier are binned: within-bin ties count half, scores take the bin middle.
    assert released["auroc"] == pytest.approx(exact["auroc"], abs=0.03)
    assert released["brier"] == pytest.approx(exact["brier"], abs=1 / SCORE_BINS)


def test_noiseless_sums_of_every_other_task_match_the_exact_metrics() -> None:
    rng = np.random.default_rng(3)
    for task, tolerance in [(MULTICLASS, 0.05), (REGRESSION, 1e-9), (RECONSTRUCTION, 1e-9)]:
        truth, scores = _examples(task, 300, rng)
        exact = compute_metrics(task, truth, scores)
        released = metrics_from_sums(task, row_statistics(task, truth, scores).sum(axis=0))
        for name, value in exact.items():
            assert released[name] == pytest.approx(value, abs=tolerance), (task.kind, name)
    truth, scores = _examples(RECOMMENDATION, 300, rng)
    exact = compute_metrics(RECOMMENDATION, truth, scores)
    released = metrics_from_sums(
        RECOMMENDATION, row_statistics(RECOMMENDATION, truth, scores).sum(axis=0)
    )
    assert released == pytest.approx(exact)


def test_the_binned_c_index_orders_risk_like_harrell() -> None:
    rng = np.random.default_rng(4)
    bins = rng.integers(0, 7, 400)
    labels = np.stack([bins, rng.integers(0, 2, 400)], axis=1).astype(float)
    good = -bins + rng.normal(0, 0.5, 400) - 0.5  # higher risk dies earlier
    concordant = metrics_from_sums(SURVIVAL, row_statistics(SURVIVAL, labels, good).sum(axis=0))
    reversed_ = metrics_from_sums(SURVIVAL, row_statistics(SURVIVAL, labels, -7 - good).sum(axis=0))
    assert concordant["c-index"] > 0.75 and reversed_["c-index"] < 0.25


def test_metrics_from_noisy_sums_stay_in_range_and_undefined_ones_are_nan() -> None:
    rng = np.random.default_rng(5)
    labels, probabilities = _examples(BINARY, 12, rng)
    rows = row_statistics(BINARY, labels, probabilities)
    for _ in range(200):
        released = metrics_from_sums(BINARY, noisy_sums(rows, statistics_design(BINARY), 5.0, rng))
        assert all(math.isnan(v) or 0 <= v <= 1 for v in released.values())
    assert math.isnan(metrics_from_sums(BINARY, np.zeros(2 * SCORE_BINS))["sensitivity"])


def test_sums_travel_as_reply_scalars_and_pool_across_hospitals() -> None:
    rng = np.random.default_rng(6)
    parts = [_examples(BINARY, n, rng) for n in (40, 70, 90)]
    sums = [row_statistics(BINARY, *part).sum(axis=0) for part in parts]
    replies = [{"hospital": f"h{i}", "auroc": 0.5, **sums_as_reply(s)} for i, s in enumerate(sums)]
    assert np.array_equal(sums_from_reply(replies[0]), sums[0])
    pooled = pooled_metrics(BINARY, replies)
    labels = np.concatenate([part[0] for part in parts])
    probabilities = np.concatenate([part[1] for part in parts])
    assert pooled is not None
    assert pooled["accuracy"] == pytest.approx(skm.accuracy_score(labels, probabilities >= 0.5))
    assert released_count(BINARY, np.sum(sums, axis=0)) == pytest.approx(200)
    assert pooled_metrics(BINARY, [*replies, {"hospital": "h9", "auroc": 0.9}]) is None
    assert sums_from_reply({"noisy-sum-001": 1.0}) is None  # a gap: not a release
