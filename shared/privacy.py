"""Pure DP-SGD privacy math, delegated to Opacus' RDP accountant.

Each hospital's noise is calibrated *once*, for every step it plans to take in the
run (rounds x local epochs x steps per epoch), so the epsilon it has spent after
the last round is at most the target. Epsilon is always recomputed from the full
history of (noise multiplier, sample rate, steps) entries: that is sequential RDP
composition, valid across rounds and across runs.

Opacus is imported inside the functions, so that importing this module (for its
types) stays cheap in processes that never train.

Examples
--------
>>> plan = plan_dp_sgd(n_samples=200, batch_size=32, local_epochs=2, rounds=5,
...                    target_epsilon=3.0, delta=1e-5)
>>> plan.steps_per_round, round(plan.sample_rate, 4)
(14, 0.1429)
>>> epsilon_spent([plan.round_entry()] * 5, delta=1e-5) <= 3.0
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from fedcare.shared.errors import SiteTooSmallError

HistoryEntry = tuple[float, float, int]
"""One homogeneous stretch of DP-SGD: (noise multiplier, sample rate, steps)."""

ACCOUNTANT = "rdp"

NOISE_TO_SIGNAL_WARNING = 1.0
"""Noise-to-signal (:func:`noise_to_signal`) above which the run report warns that a
site's DP noise may swamp what it learns. Measured on the built-in data
(simulations/BENCHMARKS.md): federations whose sites stayed below 1 learnt as well
as at epsilon 3; above 1 the results began to spread."""

NOISE_TO_SIGNAL_LIMIT = 10.0
"""Noise-to-signal above which a hospital declines to train: ten times the noise at
which the built-in data was still measured to learn."""


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Batches per epoch, as Opacus counts them (``len`` of the non-private loader)."""
    return math.ceil(n_samples / batch_size)


@dataclass(frozen=True)
class DpSgdPlan:
    """How one hospital runs DP-SGD for a whole run.

    Attributes
    ----------
    noise_multiplier : float
        Gaussian noise std divided by the clipping norm.
    sample_rate : float
        Poisson sampling rate of each batch.
    steps_per_round : int
        Optimiser steps each round (local epochs x steps per epoch).
    rounds : int
        Rounds the calibration budgets for.
    target_epsilon : float
        Epsilon the whole run may spend.
    delta : float
        Delta of the guarantee.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    target_epsilon: float
    delta: float

    def round_entry(self) -> HistoryEntry:
        """The accountant entry one full round adds."""
        return (self.noise_multiplier, self.sample_rate, self.steps_per_round)


def plan_dp_sgd(  # noqa: PLR0913 - the run's sizes and budget, each needed
    *,
    n_samples: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    target_epsilon: float,
    delta: float,
    reserved: Sequence[HistoryEntry] = (),
) -> DpSgdPlan:
    """Calibrate the noise multiplier so the whole run spends at most ``target_epsilon``.

    ``reserved`` are the run's other releases (a DP fill statistic,
    :mod:`shared.imputation`): the training steps get what they leave of the target.

    Returns
    -------
    DpSgdPlan
        Both searches return the upper end of their bracket, so the planned
        epsilon (with ``reserved``) never exceeds the target.

    Raises
    ------
    ValueError
        If no noise level reaches the target (Opacus: "The privacy budget is too low").
    """
    per_epoch = steps_per_epoch(n_samples, batch_size)
    sample_rate = 1.0 / per_epoch
    steps_per_round = local_epochs * per_epoch
    with warnings.catch_warnings():
        # The search tries very large noise levels whose best RDP order is the
        # largest one; that only loosens (never understates) those candidates.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        noise = _noise_multiplier(
            target_epsilon, delta, sample_rate, steps_per_round * rounds, reserved
        )
    return DpSgdPlan(
        noise_multiplier=float(noise),
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        rounds=rounds,
        target_epsilon=target_epsilon,
        delta=delta,
    )


def _noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    reserved: Sequence[HistoryEntry],
) -> float:
    """Return the smallest noise (within 1 %) whose steps, after ``reserved``, fit the target."""
    from opacus.accountants.utils import get_noise_multiplier  # heavy: only when planning

    if not reserved:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=ACCOUNTANT,
            )
        )

    def fits(noise: float) -> bool:
        return epsilon_spent([*reserved, (noise, sample_rate, steps)], delta=delta) <= (
            target_epsilon
        )

    low, high = 0.0, 10.0
    while not fits(high):
        if high > _MAX_NOISE:
            raise ValueError(
                f"The privacy budget is too low: epsilon {target_epsilon:g} leaves nothing for "
                "training after the run's other releases"
            )
        low, high = high, 2 * high
    # Bisection on the accountant itself (Opacus' own search does the same without reserved).
    while high - low > 0.01 * high:
        middle = (low + high) / 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


_MAX_NOISE = 1e4
"""Largest noise multiplier the search tries before calling the budget too low."""


def epsilon_spent(history: Sequence[HistoryEntry], *, delta: float) -> float:
    """Epsilon of the composed ``history`` at ``delta`` (0 for an empty history).

    Entries of the same mechanism (noise multiplier and sample rate) are merged
    first: RDP of the subsampled Gaussian is linear in the number of steps, so the
    result is identical and each mechanism is analysed once.
    """
    from opacus.accountants import RDPAccountant  # heavy: only when accounting

    steps_by_mechanism: dict[tuple[float, float], int] = {}
    for noise, rate, steps in history:
        key = (float(noise), float(rate))
        steps_by_mechanism[key] = steps_by_mechanism.get(key, 0) + int(steps)
    accountant = RDPAccountant()
    accountant.history = [
        (noise, rate, steps) for (noise, rate), steps in steps_by_mechanism.items()
    ]
    return float(accountant.get_epsilon(delta=delta))


def noise_to_signal(noise_multiplier: float, sample_rate: float, n_samples: int) -> float:
    """Noise std of one DP-SGD step's mean gradient, per coordinate, over its largest signal.

    Each step sums at most ``q * n`` clipped gradients (norm <= C each) and adds
    Gaussian noise of std ``sigma * C`` per coordinate; the mean divides both by
    the expected batch ``q * n``. So ``sigma / (q * n)`` is the noise per
    coordinate in units of the clipping bound C, which also bounds the mean
    gradient's norm. Larger batches (a higher sampling rate) lower it.
    """
    return noise_multiplier / max(sample_rate * n_samples, 1e-12)


def check_noise(plan: DpSgdPlan, n_samples: int, *, site: str) -> float:
    """Return the plan's noise-to-signal; refuse a plan whose noise swamps any signal.

    Raises
    ------
    SiteTooSmallError
        If the noise-to-signal exceeds :data:`NOISE_TO_SIGNAL_LIMIT`; the message
        names the noise multiplier and how to lower it.
    """
    ratio = noise_to_signal(plan.noise_multiplier, plan.sample_rate, n_samples)
    if ratio > NOISE_TO_SIGNAL_LIMIT:
        raise SiteTooSmallError(
            f"{site} declines to train: with {n_samples} training rows and this run's budget "
            f"(epsilon {plan.target_epsilon:g} over {plan.rounds} rounds of "
            f"{plan.steps_per_round} steps), DP-SGD needs noise multiplier "
            f"{plan.noise_multiplier:.2f} at an expected batch of "
            f"{plan.sample_rate * n_samples:.1f}, a noise-to-signal of {ratio:.2f} (limit "
            f"{NOISE_TO_SIGNAL_LIMIT:g}): nothing would be learnt. Raise epsilon or "
            "batch-size, or run fewer rounds or local epochs."
        )
    return ratio
