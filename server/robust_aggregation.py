"""Aggregating plaintext updates by name: FedAvg or one of Flower's robust rules.

The ``robust`` aggregation mode sees every hospital's update (over TLS, without
SecAgg+), so besides FedAvg it can use rules that a few hostile updates cannot
drag far: the coordinate-wise median, the coordinate-wise trimmed mean and Krum.
The arithmetic is Flower's own (``flwr.server.strategy.aggregate``); this module
picks the rule, checks there are enough updates for it, and keeps dtypes.

Notes
-----
Screen the updates first (``server.update_validation.screen_replies``): these
rules tolerate outliers, not NaN or mis-shaped arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from flwr.server.strategy.aggregate import (
    aggregate,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)

from fedcare.shared.errors import FedcareError

Update = tuple[list[np.ndarray], int]
"""One hospital's update arrays and its number of training rows."""


class AggregationError(FedcareError, ValueError):
    """Updates cannot be aggregated with the chosen method and settings."""


class RobustMethod(StrEnum):
    """How updates are combined into one."""

    FEDAVG = "fedavg"
    """Mean weighted by training rows; one hostile update can move it arbitrarily."""
    MEDIAN = "median"
    """Coordinate-wise median; ignores training rows."""
    TRIMMED_MEAN = "trimmed-mean"
    """Coordinate-wise mean after cutting ``trim_fraction`` from each end; ignores rows."""
    KRUM = "krum"
    """The one update closest to its nearest neighbours, tolerating ``krum_byzantine``."""


def minimum_updates(
    method: RobustMethod, *, trim_fraction: float = 0.2, krum_byzantine: int = 1
) -> int:
    """Return the fewest updates ``method`` can aggregate with these settings.

    Parameters
    ----------
    method : RobustMethod
        The aggregation rule (or its name).
    trim_fraction : float
        For the trimmed mean: the share of updates cut from each end, in (0, 0.5).
    krum_byzantine : int
        For Krum: how many hostile updates to tolerate, at least 0.

    Returns
    -------
    int
        1 for FedAvg and the median; for the trimmed mean, enough updates that it
        cuts at least one from each end (with fewer it is a plain mean); for Krum,
        ``2 * krum_byzantine + 3``, as Krum needs more than ``2 f + 2`` updates.

    Raises
    ------
    AggregationError
        If ``method`` is unknown or the setting it uses is out of range.
    """
    method = _method(method)
    if method is RobustMethod.TRIMMED_MEAN:
        _check_trim_fraction(trim_fraction)
        return _smallest_trimmed_count(trim_fraction)
    if method is RobustMethod.KRUM:
        _check_krum_byzantine(krum_byzantine)
        return 2 * int(krum_byzantine) + 3
    return 1


def aggregate_updates(
    method: RobustMethod,
    updates: Sequence[Update],
    *,
    trim_fraction: float = 0.2,
    krum_byzantine: int = 1,
) -> list[np.ndarray]:
    """Combine hospital updates into one with ``method``.

    Parameters
    ----------
    method : RobustMethod
        The aggregation rule (or its name, e.g. ``"trimmed-mean"``).
    updates : Sequence[Update]
        ``(arrays, num_examples)`` per hospital, all with the same shapes and dtypes.
    trim_fraction : float
        For the trimmed mean: the share of updates cut from each end, in (0, 0.5).
    krum_byzantine : int
        For Krum: how many hostile updates to tolerate (Flower's ``num_malicious``).

    Returns
    -------
    list[np.ndarray]
        The aggregate, new arrays with the dtypes of the inputs.

    Raises
    ------
    AggregationError
        If there are too few updates for ``method`` (the message names the setting
        to change), the updates disagree in layout, a setting is out of range, or
        FedAvg is given a non-positive row count.
    """
    method = _method(method)
    needed = minimum_updates(method, trim_fraction=trim_fraction, krum_byzantine=krum_byzantine)
    if len(updates) < needed:
        raise AggregationError(
            _too_few(method, len(updates), needed, trim_fraction, krum_byzantine)
        )
    _check_same_layout(updates)
    # Flower computes in the input dtype; float64 keeps a weighted sum of many float32
    # deltas from losing digits and Krum's squared distances from overflowing.
    results = [([np.asarray(a, dtype=np.float64) for a in arrays], n) for arrays, n in updates]
    match method:
        case RobustMethod.FEDAVG:
            _check_row_counts(updates)
            combined = aggregate(results)
        case RobustMethod.MEDIAN:
            combined = aggregate_median(results)
        case RobustMethod.TRIMMED_MEAN:
            combined = aggregate_trimmed_avg(results, proportiontocut=trim_fraction)
        case RobustMethod.KRUM:
            # to_keep=0 is plain Krum (one update chosen), not Multi-Krum's average.
            combined = aggregate_krum(results, num_malicious=krum_byzantine, to_keep=0)
    return [_cast_like(array, like) for array, like in zip(combined, updates[0][0], strict=True)]


def _method(method: RobustMethod | str) -> RobustMethod:
    try:
        return RobustMethod(method)
    except ValueError as error:
        choices = ", ".join(f"'{m.value}'" for m in RobustMethod)
        raise AggregationError(
            f"unknown aggregation method '{method}'; choose one of {choices}"
        ) from error


def _check_trim_fraction(trim_fraction: float) -> None:
    if not 0.0 < trim_fraction < 0.5:
        raise AggregationError(
            f"trim_fraction is {trim_fraction}; set it above 0 and below 0.5 "
            "(0.2 cuts the top and bottom fifth of each coordinate)"
        )


def _check_krum_byzantine(krum_byzantine: int) -> None:
    if isinstance(krum_byzantine, bool) or not isinstance(krum_byzantine, int | np.integer):
        raise AggregationError("krum_byzantine must be a whole number of hospitals")
    if krum_byzantine < 0:
        raise AggregationError(
            f"krum_byzantine is {krum_byzantine}; set it to 0 or more hostile hospitals"
        )


def _smallest_trimmed_count(trim_fraction: float) -> int:
    """Return the fewest updates from which Flower's trimmed mean cuts one per end."""
    # Flower cuts int(trim_fraction * n) from each end. Float rounding can put the exact
    # answer one either side of ceil(1 / trim_fraction), so count up from just below it.
    count = max(1, math.ceil(1.0 / trim_fraction) - 1)
    while int(trim_fraction * count) < 1:
        count += 1
    return count


def _too_few(
    method: RobustMethod, got: int, needed: int, trim_fraction: float, krum_byzantine: int
) -> str:
    if got == 0:
        return "no updates to aggregate; at least one hospital must send a valid update"
    if method is RobustMethod.TRIMMED_MEAN:
        return (
            f"trimmed-mean with trim_fraction {trim_fraction} needs at least {needed} updates "
            f"to cut one from each end, got {got}; raise trim_fraction (it must stay below "
            "0.5, so 3 updates are the least in any case) or use 'median'"
        )
    if got < 3:
        return (
            f"krum needs at least 3 updates even with krum_byzantine 0, got {got}; "
            "use 'median' or wait for more hospitals"
        )
    return (
        f"krum with krum_byzantine {krum_byzantine} needs more than 2 * {krum_byzantine} + 2 "
        f"updates, got {got}; lower krum_byzantine to {(got - 3) // 2} or wait for more "
        "hospitals"
    )


def _check_same_layout(updates: Sequence[Update]) -> None:
    first = updates[0][0]
    layout = [(np.shape(a), np.asarray(a).dtype) for a in first]
    for index, (arrays, _) in enumerate(updates[1:], start=1):
        if [(np.shape(a), np.asarray(a).dtype) for a in arrays] != layout:
            raise AggregationError(
                f"update {index} differs from update 0 in array count, shapes or dtypes; "
                "screen replies with server.update_validation.screen_replies first"
            )


def _check_row_counts(updates: Sequence[Update]) -> None:
    counts = [num_examples for _, num_examples in updates]
    if any(count <= 0 for count in counts):
        raise AggregationError(
            "fedavg weighs updates by training rows, and some update reports none; "
            "screen replies with server.update_validation.screen_replies first"
        )


def _cast_like(array: np.ndarray, like: np.ndarray) -> np.ndarray:
    dtype = np.asarray(like).dtype
    result = np.asarray(array)
    if np.issubdtype(dtype, np.integer):
        result = np.rint(result)  # a mean of counters rounds; a plain cast would truncate
    return result.astype(dtype, copy=True)
