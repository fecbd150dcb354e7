"""Fill values for empty cells: the contract's public numbers, or each hospital's DP mean.

A contract may let a feature's empty cells be filled (:mod:`shared.contract.missing`).
A fill written in the contract is public: using it reveals nothing about any
patient. A ``"dp-mean"`` fill is computed from the hospital's own rows, so it
is a release like any other: one patient's value would shift the fill every
other patient with an empty cell receives, which DP-SGD's per-example clipping
does not cover. It is therefore the Gaussian mechanism's answer, once per run,
booked in the hospital's privacy ledger before it is used
(:mod:`client.fill_values`), with the run's DP-SGD noise calibrated so that the
fill and every training step together stay within the run's epsilon
(:func:`shared.privacy.plan_dp_sgd`'s ``reserved``).

The DP mean of ``k`` features is one Gaussian query: each example contributes,
per feature, its value centred on the middle of the feature's public range and
divided by the range's half-width (so within [-1, 1]), and a 1 if it was
observed; 0 and 0 where it was not. A sequence contributes the mean of its
observed steps, so a patient counts once however long the stay. One example's
contribution has L2 norm at most ``sqrt(2 k)``; Gaussian noise of standard
deviation ``noise_multiplier * sqrt(2 k)`` on every sum and count makes the
query ``noise_multiplier``'s Gaussian mechanism, which the RDP accountant
composes as a subsampled Gaussian with sample rate 1 and one step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from fedcare.shared.contract.features import Feature
from fedcare.shared.contract.missing import FillStatistic, observed_name
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.privacy import ACCOUNTANT, HistoryEntry

FILL_EPSILON_SHARE = 0.1
"""Share of a run's epsilon the DP fill values take on their own (DP-SGD gets the rest)."""


def fill_noise_multiplier(target_epsilon: float, delta: float) -> float:
    """Return the Gaussian noise multiplier of a run's DP fill values.

    Alone, the fill release costs :data:`FILL_EPSILON_SHARE` of ``target_epsilon``
    at ``delta`` (Opacus' calibration, rounded up).
    """
    from opacus.accountants.utils import get_noise_multiplier  # heavy: only when filling

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        noise = get_noise_multiplier(
            target_epsilon=FILL_EPSILON_SHARE * target_epsilon,
            target_delta=delta,
            sample_rate=1.0,
            steps=1,
            accountant=ACCOUNTANT,
        )
    return float(noise)


def fill_release(noise_multiplier: float) -> HistoryEntry:
    """Return the accountant entry of one DP fill release: the Gaussian mechanism, once."""
    return (noise_multiplier, 1.0, 1)


def dp_fill_features(features: Sequence[Feature]) -> tuple[Feature, ...]:
    """Return the features whose empty cells take a DP mean."""
    return tuple(
        feature
        for feature in features
        if feature.missing.fills and feature.fill is FillStatistic.DP_MEAN
    )


def public_fills(features: Sequence[Feature]) -> dict[str, float]:
    """Return the fill values written in the contract, by feature name."""
    return {
        feature.name: feature.fill
        for feature in features
        if feature.missing.fills and isinstance(feature.fill, float)
    }


def exact_means(data: Examples, features: Sequence[Feature]) -> dict[str, float]:
    """Return each feature's mean over examples that observed it, without noise.

    For a run without DP, and for a simulation's own counterparts of the
    hospitals (its baselines and test rows), which release nothing. A feature
    nobody observed takes the middle of its range.
    """
    return _means(data, features, noise_multiplier=None, rng=None)


def dp_means(
    data: Examples,
    features: Sequence[Feature],
    *,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Return each feature's differentially private mean (see the module docstring).

    Parameters
    ----------
    data : Examples
        A hospital's training rows, empty cells NaN (tables) or forward-filled
        sequences with their observed channels.
    features : Sequence[Feature]
        Features with a ``min`` and ``max`` (:func:`dp_fill_features`).
    noise_multiplier : float
        The Gaussian mechanism's noise over its L2 sensitivity
        (:func:`fill_noise_multiplier`).
    rng : numpy.random.Generator
        Where the noise comes from.

    Returns
    -------
    dict[str, float]
        The means, each within its feature's range.
    """
    return _means(data, features, noise_multiplier=noise_multiplier, rng=rng)


def _means(
    data: Examples,
    features: Sequence[Feature],
    *,
    noise_multiplier: float | None,
    rng: np.random.Generator | None,
) -> dict[str, float]:
    if not features:
        return {}
    low = np.array([feature.minimum for feature in features], dtype=np.float64)
    high = np.array([feature.maximum for feature in features], dtype=np.float64)
    middle, half = (low + high) / 2, np.maximum((high - low) / 2, 1e-12)
    values, observed = _per_example(data, features)
    centred = np.where(observed, np.clip((values - middle) / half, -1.0, 1.0), 0.0)
    sums, counts = centred.sum(axis=0), observed.sum(axis=0).astype(np.float64)
    if noise_multiplier is not None and rng is not None:
        scale = noise_multiplier * math.sqrt(2 * len(features))
        sums = sums + rng.normal(0.0, scale, size=sums.shape)
        counts = counts + rng.normal(0.0, scale, size=counts.shape)
    share = np.clip(sums / np.maximum(counts, 1.0), -1.0, 1.0)
    means = middle + half * share
    return {feature.name: float(mean) for feature, mean in zip(features, means, strict=True)}


def _per_example(data: Examples, features: Sequence[Feature]) -> tuple[np.ndarray, np.ndarray]:
    """Return each example's value of each feature, and whether it observed it.

    A sequence's value is the mean over its observed steps. Both are
    ``(examples, features)``.
    """
    names = list(data.feature_names)
    columns = [names.index(feature.name) for feature in features]
    if data.kind is not InputKind.SEQUENCES:
        values = data.features[:, columns].astype(np.float64)
        observed = ~np.isnan(values)
        return np.nan_to_num(values), observed
    masks = [names.index(observed_name(feature.name)) for feature in features]
    real = data.features[..., -1:] > 0.5
    seen = (data.features[..., masks] > 0.5) & real
    steps = np.where(seen, np.nan_to_num(data.features[..., columns]), 0.0).sum(axis=1)
    counts = seen.sum(axis=1)
    return steps / np.maximum(counts, 1), counts > 0
