"""Examples as every party sees them: arrays, site-local splits, scaling and identity.

An example's input is a table row, an image, a padded sequence or a (patient,
treatment) interaction (see :class:`InputKind`). A hospital scales inputs with
*public* bounds (its data contract's ranges, or a built-in dataset's published
ranges), never with statistics of its rows: a scaling fitted on the data would
let one patient shift every other patient's inputs, outside what DP-SGD's
per-example clipping covers. :func:`dataset_fingerprint` names a dataset by its
rows, so its privacy budget follows the patients rather than a label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from fedcare.shared.errors import DataError
from fedcare.shared.sequences import fit_padded_standardizer, standardize_padded
from fedcare.shared.tasks import Task

MIN_TRAIN_ROWS = 10
"""Fewest training rows a hospital may train on: below this DP-SGD noise swamps any signal."""

MIN_EVAL_ROWS = 2


class InputKind(StrEnum):
    """What one example's input is."""

    TABLE = "table"
    """``(d,)`` features of one patient."""
    IMAGES = "images"
    """``(channels, height, width)`` pixels in [0, 1]."""
    SEQUENCES = "sequences"
    """``(steps, features + 1)``: left-padded time steps, the last channel a 0/1 mask."""
    INTERACTIONS = "interactions"
    """``(2,)`` int64 (patient, treatment) indices; the label is the outcome (1: responded).

    The patient index is local to its hospital (0 to ``patients - 1``), the
    treatment index points into the federation's treatment list (the feature names).
    """

    @property
    def is_image(self) -> bool:
        """Whether one input is an image: pixels in [0, 1], never standardised, shift-augmented."""
        return self is InputKind.IMAGES


@dataclass(frozen=True)
class Examples:
    """Examples (one per patient or image) and their labels.

    Attributes
    ----------
    features : np.ndarray
        ``(n, *input_shape)`` float32, or ``(n, 2)`` int64 indices for interactions.
    labels : np.ndarray
        ``(n,)`` class indices, regression targets or interaction outcomes, or
        ``(n, 2)`` (time bin, event) for survival.
    feature_names : tuple[str, ...]
        Names of the input's features (table columns, sequence channels, the
        image channels, or the treatments an interaction's index points into).
    kind : InputKind
        What one input is.
    patients : int
        For interactions, how many patients the patient index ranges over (a
        subset keeps the whole range); 0 otherwise.
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    kind: InputKind = InputKind.TABLE
    patients: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example's input, as model builders take it.

        For interactions it is ``(patients, treatments)``: the ranges of the two
        indices, which size the model's embedding tables.
        """
        if self.kind is InputKind.INTERACTIONS:
            return (self.patients, len(self.feature_names))
        return tuple(int(size) for size in self.features.shape[1:])

    @property
    def shared_input_shape(self) -> tuple[int, ...]:
        """The input shape a party holding none of these patients builds the model with.

        Patient embeddings never leave their hospital
        (:data:`shared.serialization.LOCAL_PREFIX`), so for interactions the
        aggregator's model embeds a single placeholder patient; every other
        input is shared whole.
        """
        if self.kind is InputKind.INTERACTIONS:
            return (1, len(self.feature_names))
        return self.input_shape

    def subset(self, rows: np.ndarray) -> Examples:
        """Return the examples at indices ``rows``."""
        return replace(self, features=self.features[rows], labels=self.labels[rows])

    def with_features(self, features: np.ndarray) -> Examples:
        """Return the same examples with ``features`` as their inputs."""
        return replace(self, features=features)

    def filled(self, fills: Mapping[str, float]) -> Examples:
        """Return the examples with each named feature's empty (NaN) cells set to its fill.

        A table's column or a sequence's value channel is found by its name
        (:mod:`shared.contract.missing`).
        """
        if not fills:
            return self
        features = self.features.copy()
        names = list(self.feature_names)
        for name, value in fills.items():
            values = features[..., names.index(name)]
            values[np.isnan(values)] = value
        return self.with_features(features)


_UNSCALED = frozenset({InputKind.IMAGES, InputKind.INTERACTIONS})


SCALED_RANGE = 3.0
"""A bounded feature's public range is mapped onto [-3, 3]: about the spread of a
standardised feature (a z-score rarely leaves +-3), so that DP-SGD's clipped and
noised steps move the weights as far as they would on standardised inputs."""

LOG_OFFSET = 0.01
"""A log-scaled feature is scaled as ``log(x + LOG_OFFSET * (high - low))``: the offset
keeps a value of 0 finite and is fixed by the public range, not by the data."""


@dataclass(frozen=True)
class FeatureBounds:
    """Public lower and upper bounds of each feature (table column or sequence channel).

    A bound may be infinite where nothing public is known; such a feature is
    left unscaled rather than scaled with statistics of the data. A feature
    marked ``log`` (a size or concentration whose range spans orders of
    magnitude) is scaled on a log scale, so that its typical values sit near
    the middle of the scaled range rather than at one end.
    """

    low: np.ndarray
    high: np.ndarray
    log: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.low.shape != self.high.shape or np.any(self.low > self.high):
            raise ValueError("feature bounds need one low <= high pair per feature")
        if self.log is not None and (
            self.log.shape != self.low.shape
            or np.any(self.log & ~((self.low >= 0) & (self.high > self.low)))
        ):
            raise ValueError("a log-scaled feature needs bounds 0 <= low < high")

    @property
    def log_offset(self) -> np.ndarray:
        """Per feature, the offset added before taking the log (NaN: scaled linearly)."""
        log = self.log if self.log is not None else np.zeros(self.low.shape, dtype=bool)
        return np.where(log, LOG_OFFSET * (self.high - self.low), np.nan)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature centring and scaling.

    Hospitals build it from public bounds (:meth:`from_bounds`): every bounded
    feature is clipped to its range and mapped onto [-3, 3] (log-scaled ones on
    a log scale). :meth:`fit` fits the data's own mean and spread; only the
    central, non-private baseline of a simulation uses it. Tables are scaled per
    column and sequences per channel over their real (unpadded) steps. Images
    are left as they are: their contract already fixes pixel values to [0, 1].
    Interactions are indices, never scaled.
    """

    mean: np.ndarray
    scale: np.ndarray
    kind: InputKind
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    log_offset: np.ndarray | None = None

    @classmethod
    def from_bounds(cls, bounds: FeatureBounds | None, kind: InputKind) -> Standardizer:
        """Map each bounded feature's range onto [-3, 3]; leave the others as they are."""
        if bounds is None or kind in _UNSCALED:
            return cls(mean=np.zeros(1), scale=np.ones(1), kind=kind)
        offset = bounds.log_offset
        low, high = _log_scaled(bounds.low, offset), _log_scaled(bounds.high, offset)
        finite = np.isfinite(low) & np.isfinite(high)
        mean = np.where(finite, (low + high) / 2, 0.0)
        half = np.where(finite, (high - low) / (2 * SCALED_RANGE), 1.0)
        return cls(
            mean=mean.astype(np.float32),
            scale=np.where(half > 0, half, 1.0).astype(np.float32),
            kind=kind,
            low=bounds.low.astype(np.float32),
            high=bounds.high.astype(np.float32),
            log_offset=offset,
        )

    @classmethod
    def fit(cls, data: Examples) -> Standardizer:
        """Fit on ``data``; constant features get scale 1 rather than a division by zero."""
        if data.kind is InputKind.SEQUENCES:
            mean, scale = fit_padded_standardizer(data.features)
            return cls(mean=mean, scale=scale, kind=data.kind)
        if data.kind in _UNSCALED:
            return cls(mean=np.zeros(1), scale=np.ones(1), kind=data.kind)
        mean = data.features.mean(axis=0)
        scale = data.features.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(mean=mean, scale=scale, kind=data.kind)

    def transform(self, data: Examples) -> Examples:
        """Return ``data`` with scaled features (float32; interactions stay indices)."""
        if self.kind is InputKind.INTERACTIONS:
            return data
        if self.kind.is_image:
            return data.with_features(data.features.astype(np.float32))
        if self.kind is InputKind.SEQUENCES:
            values = self._bounded(data.features[..., :-1])
            features = np.concatenate([values, data.features[..., -1:]], axis=-1)
            features = standardize_padded(features, self.mean, self.scale)
        else:
            features = (self._bounded(data.features) - self.mean) / self.scale
        return data.with_features(features.astype(np.float32))

    def _bounded(self, values: np.ndarray) -> np.ndarray:
        """Clip values to their public range and take the log of log-scaled features."""
        if self.low is None or self.high is None:
            return values
        values = np.clip(values, self.low, self.high)
        if self.log_offset is None:
            return values
        return _log_scaled(values, self.log_offset).astype(np.float32)


def _log_scaled(values: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``log(values + offset)`` where ``offset`` is a number, ``values`` where it is NaN."""
    logged = np.log(np.where(np.isnan(offset), 1.0, values + np.nan_to_num(offset)))
    return np.where(np.isnan(offset), values, logged)


def dataset_fingerprint(data: Examples, *, source: str) -> str:
    """Name a dataset by its rows: SHA-256 over each row's input and label, in any order.

    Reordering the rows, renaming the file or the hospital's label for it leaves
    the fingerprint unchanged; adding, removing or changing a row changes it.
    ``source`` says what the rows mean (a contract's fingerprint, a built-in
    dataset's name), so equal arrays under different contracts stay apart.
    The fingerprint is a function of every patient's values: it stays in the
    hospital's ledger and never leaves the hospital.
    """
    digest = hashlib.sha256(f"{source}|{data.kind}|{data.input_shape}".encode())
    features = np.ascontiguousarray(data.features).reshape(len(data), -1)
    labels = np.ascontiguousarray(data.labels).reshape(len(data), -1)
    rows = sorted(
        hashlib.sha256(feature.tobytes() + label.tobytes()).digest()
        for feature, label in zip(features, labels, strict=True)
    )
    for row in rows:
        digest.update(row)
    return digest.hexdigest()


@dataclass(frozen=True)
class SiteData:
    """One hospital's data, split and standardised, ready to train and evaluate."""

    train: Examples
    evaluation: Examples


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


def split_interactions(data: Examples, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split interaction rows into (kept, held-out) by leave-one-out.

    Each patient with at least two interactions, one of them a response, has one
    of its responses (drawn by ``rng``) held out; every other interaction trains.
    So no patient is left without training interactions, and each evaluated
    patient has a response to rank.
    """
    patients, outcomes = data.features[:, 0], data.labels
    held = []
    for patient in np.unique(patients):
        rows = np.flatnonzero(patients == patient)
        responses = rows[outcomes[rows] == 1]
        if len(rows) >= 2 and len(responses):
            held.append(int(rng.choice(responses)))
    held_rows = np.array(sorted(held), dtype=np.int64)
    return np.setdiff1d(np.arange(len(data)), held_rows), held_rows


FillValues = Callable[[Examples], Mapping[str, float]]
"""Given a hospital's training rows, the value each filled feature's empty cells take."""


def prepare_site(
    data: Examples,
    task: Task,
    *,
    scaler: Standardizer,
    eval_fraction: float,
    seed: int,
    site: str,
    fill: FillValues | None = None,
) -> SiteData:
    """Split a hospital's rows into train/evaluation, fill their empty cells and scale both.

    ``scaler`` holds public bounds (:meth:`Standardizer.from_bounds`), so the
    inputs of one patient never depend on another's. Interactions are split by
    :func:`split_interactions` (leave-one-out per patient, so ``eval_fraction``
    does not apply); other rows by :func:`split_rows`. Where the contract fills
    empty cells, ``fill`` gives the values from the training rows
    (:mod:`shared.imputation`); both splits are filled with them before scaling.

    Raises
    ------
    DataError
        If the split leaves too few rows to train or evaluate. The message names
        the site and counts, never any value; it stays at the hospital (the egress
        guard sends out its type only). A single-class site
        is allowed: in a federation it still teaches the shared model about its class.
    """
    rng = np.random.default_rng(seed)
    if data.kind is InputKind.INTERACTIONS:
        train_rows, eval_rows = split_interactions(data, rng)
    else:
        train_rows, eval_rows = split_rows(
            task.strata(data.labels), eval_fraction, rng, stratify=task.stratified
        )
    if len(train_rows) < MIN_TRAIN_ROWS or len(eval_rows) < MIN_EVAL_ROWS:
        raise DataError(
            f"{site}: {len(data)} rows give {len(train_rows)} to train and {len(eval_rows)} to "
            f"evaluate; at least {MIN_TRAIN_ROWS} and {MIN_EVAL_ROWS} are needed. "
            "Give this hospital more rows (fewer hospitals, a milder skew, or more data)."
        )
    train, evaluation = data.subset(train_rows), data.subset(eval_rows)
    if fill is not None:
        values = fill(train)
        train, evaluation = train.filled(values), evaluation.filled(values)
    return SiteData(train=scaler.transform(train), evaluation=scaler.transform(evaluation))
