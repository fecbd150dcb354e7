"""Tabular data as every party sees it: arrays, site-local splits and standardisation.

A hospital standardises features with statistics of its *own training split* only,
so nothing about its evaluation rows (or any other site) leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.errors import DataError
from shared.tasks import Task, TaskKind

MIN_TRAIN_ROWS = 10
"""Fewest training rows a hospital may train on: below this DP-SGD noise swamps any signal."""

MIN_EVAL_ROWS = 2


@dataclass(frozen=True)
class TabularData:
    """Rows of features and their labels.

    Attributes
    ----------
    features : np.ndarray
        ``(n, d)`` float32.
    labels : np.ndarray
        ``(n,)`` class indices or regression targets.
    feature_names : tuple[str, ...]
        Column names, ``d`` of them.
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: np.ndarray) -> TabularData:
        """Return the rows at indices ``rows``."""
        return TabularData(self.features[rows], self.labels[rows], self.feature_names)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature centring and scaling fitted on one training split."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, data: TabularData) -> Standardizer:
        """Fit on ``data``; constant columns get scale 1 rather than a division by zero."""
        mean = data.features.mean(axis=0)
        scale = data.features.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(mean=mean, scale=scale)

    def transform(self, data: TabularData) -> TabularData:
        """Return ``data`` with standardised features (float32)."""
        features = ((data.features - self.mean) / self.scale).astype(np.float32)
        return TabularData(features, data.labels, data.feature_names)


@dataclass(frozen=True)
class SiteData:
    """One hospital's data, split and standardised, ready to train and evaluate."""

    train: TabularData
    evaluation: TabularData


@dataclass(frozen=True)
class PreparedSite:
    """A hospital's prepared data together with its unscaled training rows."""

    site: SiteData
    raw_train: TabularData


def split_rows(
    labels: np.ndarray, fraction: float, rng: np.random.Generator, *, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (kept, held-out) with ``fraction`` held out.

    With ``stratify``, each class is split separately so both sides keep the
    class balance; every class with at least two rows keeps one on each side.
    """
    groups = (
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if stratify
        else [np.arange(len(labels))]
    )
    kept, held = [], []
    for rows in groups:
        rows = rng.permutation(rows)
        n_held = int(round(fraction * len(rows)))
        if len(rows) >= 2:
            n_held = min(max(n_held, 1), len(rows) - 1)
        held.append(rows[:n_held])
        kept.append(rows[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def prepare_site(
    data: TabularData, task: Task, *, eval_fraction: float, seed: int, site: str
) -> PreparedSite:
    """Split a hospital's rows into train/evaluation and standardise both with train statistics.

    Raises
    ------
    DataError
        If the split leaves too few rows to train or evaluate. The message names
        the site and counts, never any value. A single-class site is allowed: in a
        federation it still teaches the shared model about its class.
    """
    classification = task.kind is not TaskKind.REGRESSION
    rng = np.random.default_rng(seed)
    train_rows, eval_rows = split_rows(data.labels, eval_fraction, rng, stratify=classification)
    if len(train_rows) < MIN_TRAIN_ROWS or len(eval_rows) < MIN_EVAL_ROWS:
        raise DataError(
            f"{site}: {len(data)} rows give {len(train_rows)} to train and {len(eval_rows)} to "
            f"evaluate; at least {MIN_TRAIN_ROWS} and {MIN_EVAL_ROWS} are needed. "
            "Give this hospital more rows (fewer hospitals, a milder skew, or more data)."
        )
    train = data.subset(train_rows)
    standardizer = Standardizer.fit(train)
    site_data = SiteData(
        train=standardizer.transform(train),
        evaluation=standardizer.transform(data.subset(eval_rows)),
    )
    return PreparedSite(site=site_data, raw_train=train)
