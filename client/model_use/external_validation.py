"""External validation of a run's model on a hospital's own labelled file; nothing leaves.

The file is read and checked as for training (:func:`client.readers.read_site_data`).
For a binary task its patients are split (stratified, seeded) into validation
rows, which choose the operating threshold (:mod:`client.model_use.operating_point`),
and test rows, on which every reported number is computed: the task's metrics
with 95% bootstrap intervals (:mod:`shared.validation_metrics`), calibration,
the decision curve, subgroup metrics, and the global feature importance from
integrated gradients. Multiclass and regression tasks have no threshold to
choose: every row is a test row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.client.model_use.explanations import (
    explained_names,
    global_importance,
    integrated_gradients,
    per_feature,
)
from fedcare.client.model_use.operating_point import (
    DEFAULT_SENSITIVITY,
    OperatingPoint,
    Target,
    choose_threshold,
)
from fedcare.client.model_use.subgroups import subgrouping
from fedcare.client.model_use.trained_model import TrainedModel
from fedcare.client.readers import read_site_data
from fedcare.shared.calibration import (
    calibration,
    decision_curve,
    regression_calibration,
)
from fedcare.shared.data import Examples, InputKind, split_rows
from fedcare.shared.errors import FedcareError
from fedcare.shared.tasks import TaskKind
from fedcare.shared.validation_metrics import DEFAULT_RESAMPLES, metric_intervals

SCALING = "the contract's public ranges, as in training (no statistics of any data)"
"""How the inputs were scaled, for the report: training never used a hospital's statistics."""
EXPLAINED_ROWS = 500
"""Most test rows whose attributions make the global importance (integrated gradients cost)."""


@dataclass(frozen=True)
class ValidationSettings:
    """How to validate: the threshold's target, the split, subgroups and the minimum count.

    Attributes
    ----------
    target : Target
        What the binary operating threshold is chosen for.
    goal : float
        The target's value (the threshold itself for a fixed one).
    validation_fraction : float
        Share of rows (binary tasks) that choose the threshold and are not tested on.
    subgroups : tuple[str, ...]
        Features to group patients by (:func:`client.model_use.subgroups.parse_subgroup`).
    min_count : int
        Groups with fewer patients are suppressed.
    resamples : int
        Bootstrap resamples per interval.
    seed : int
        Seed of the split and of the bootstrap.
    explain : bool
        Whether to compute the global feature importance.
    """

    target: Target = Target.SENSITIVITY
    goal: float = DEFAULT_SENSITIVITY
    validation_fraction: float = 0.3
    subgroups: tuple[str, ...] = ()
    min_count: int = 10
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    explain: bool = True


@dataclass
class ValidationResult:
    """Everything an external validation found; :meth:`to_dict` is ``evaluation.json``."""

    summary: dict[str, Any]
    scores: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    importance: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready report."""
        return self.summary


def validate(trained: TrainedModel, data: Path, settings: ValidationSettings) -> ValidationResult:
    """Validate ``trained`` on the labelled file ``data`` (see the module docstring).

    Raises
    ------
    shared.errors.FedcareError
        If the file breaks the contract, the settings do not fit the task or
        the data (a subgroup that is no feature, validation rows of one class).
    """
    if not 0.0 <= settings.validation_fraction < 1.0:
        raise FedcareError(
            f"--validation-fraction must lie in [0, 1), got {settings.validation_fraction}"
        )
    examples = read_site_data(data, trained.contract)
    groupings = [
        subgrouping(trained.contract, examples.features, text) for text in settings.subgroups
    ]
    task = trained.task
    validation_rows, test_rows = _split(examples, task.kind, settings)
    inputs = trained.scaler.transform(examples).features
    scores = trained.scores(inputs)
    labels = examples.labels
    point = _operating_point(task.kind, labels[validation_rows], scores[validation_rows], settings)
    threshold = point.threshold if point else 0.5
    y_test, s_test = labels[test_rows], scores[test_rows]
    summary: dict[str, Any] = {
        "run": str(trained.run),
        "round": trained.round,
        "data": str(data),
        "task": task.kind.value,
        "rows": {"test": len(test_rows), "validation": len(validation_rows)},
        "scaling": SCALING,
        "operating_point": _point_dict(point),
        "metrics": _intervals(trained, y_test, s_test, threshold, settings),
        "subgroups": {
            grouping.feature: {
                name: _group(trained, mask[test_rows], y_test, s_test, threshold, settings)
                for name, mask in grouping.groups.items()
            }
            for grouping in groupings
        },
        "min_count": settings.min_count,
    }
    summary |= _calibration(task.kind, trained, y_test, s_test)
    importance = None
    if settings.explain:
        importance = _importance(trained, inputs[test_rows][:EXPLAINED_ROWS])
        if trained.kind is not InputKind.IMAGES:
            names = explained_names(trained.feature_names, trained.kind)
            order = np.argsort(-importance)
            summary["importance"] = {names[i]: float(importance[i]) for i in order}
    return ValidationResult(summary, s_test, y_test, importance)


def _split(
    examples: Examples, kind: TaskKind, settings: ValidationSettings
) -> tuple[np.ndarray, np.ndarray]:
    everything = np.arange(len(examples))
    needs_threshold = kind is TaskKind.BINARY and settings.target is not Target.FIXED
    if not needs_threshold or settings.validation_fraction == 0.0:
        return np.zeros(0, dtype=np.int64), everything
    test, validation = split_rows(
        examples.labels,
        settings.validation_fraction,
        np.random.default_rng(settings.seed),
        stratify=True,
    )
    return validation, test


def _operating_point(
    kind: TaskKind, labels: np.ndarray, scores: np.ndarray, settings: ValidationSettings
) -> OperatingPoint | None:
    if kind is not TaskKind.BINARY:
        return None
    if settings.target is not Target.FIXED and len(labels) == 0:
        raise FedcareError(
            "choosing a threshold needs validation rows; give --validation-fraction above 0, "
            "or a fixed --threshold"
        )
    return choose_threshold(labels, scores, settings.target, settings.goal)


def _point_dict(point: OperatingPoint | None) -> dict[str, Any] | None:
    if point is None:
        return None
    return {
        "threshold": point.threshold,
        "chosen_for": point.target.value,
        "goal": point.goal,
        "validation_rows": point.validation_rows,
        "validation_sensitivity": point.validation_sensitivity,
        "validation_specificity": point.validation_specificity,
    }


def _intervals(
    trained: TrainedModel,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    settings: ValidationSettings,
) -> dict[str, Any]:
    intervals = metric_intervals(
        trained.task,
        labels,
        scores,
        threshold=threshold,
        resamples=settings.resamples,
        seed=settings.seed,
    )
    return {name: interval.to_dict() for name, interval in intervals.items()}


def _group(
    trained: TrainedModel,
    mask: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    settings: ValidationSettings,
) -> dict[str, Any]:
    count = int(np.count_nonzero(mask))
    if count < settings.min_count:
        return {"suppressed": f"fewer than {settings.min_count} patients"}
    return {
        "patients": count,
        "metrics": _intervals(trained, labels[mask], scores[mask], threshold, settings),
    }


def _calibration(
    kind: TaskKind, trained: TrainedModel, labels: np.ndarray, scores: np.ndarray
) -> dict[str, Any]:
    if kind is TaskKind.REGRESSION:
        return {"calibration": regression_calibration(labels, scores)}
    curve = calibration(trained.task, labels, scores)
    found: dict[str, Any] = {"calibration": None if curve is None else curve.__dict__}
    if kind is TaskKind.BINARY:
        found["decision_curve"] = decision_curve(labels, scores).__dict__
    return found


def _importance(trained: TrainedModel, inputs: np.ndarray) -> np.ndarray:
    attributions = integrated_gradients(trained.model, inputs, trained.task, trained.kind)
    return global_importance(per_feature(attributions, trained.kind))
