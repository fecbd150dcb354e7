"""Datasets shipped inside installed packages, so simulations never download anything."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_breast_cancer

from shared.config import DatasetName
from shared.data import TabularData
from shared.tasks import Task, TaskKind


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset with its task and, where it has one, a natural site column.

    Attributes
    ----------
    data : TabularData
        Every row of the dataset, unscaled.
    task : Task
        What the labels mean.
    sites : np.ndarray | None
        Per-row site (hospital) identifier for the ``natural`` partition.
    """

    data: TabularData
    task: Task
    sites: np.ndarray | None = None


def _breast_cancer() -> BuiltinDataset:
    """Breast Cancer Wisconsin (Diagnostic): 569 fine-needle aspirates, 30 features.

    scikit-learn codes benign as 1; fedcare relabels so that 1 means *malignant*,
    the condition being diagnosed, and sensitivity means malignancies caught.
    """
    bunch = load_breast_cancer()
    labels = (bunch.target == 0).astype(np.float32)
    data = TabularData(
        features=bunch.data.astype(np.float32),
        labels=labels,
        feature_names=tuple(str(name) for name in bunch.feature_names),
    )
    return BuiltinDataset(data=data, task=Task(TaskKind.BINARY, positive_label="malignant"))


_LOADERS = {DatasetName.BREAST_CANCER: _breast_cancer}


def load_builtin(name: DatasetName) -> BuiltinDataset:
    """Load built-in dataset ``name`` from the installed package."""
    return _LOADERS[name]()
