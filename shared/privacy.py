"""Pure privacy math of a hospital's releases, delegated to Opacus' RDP accountant.

A hospital releases two kinds of things from its data: DP-SGD model updates
(the subsampled Gaussian mechanism) and evaluation statistics (the Gaussian
mechanism without subsampling, i.e. sample rate 1, one step). Both are history
entries ``(noise multiplier, sample rate, steps)`` of the same RDP accountant,
so they compose into one epsilon.

Each hospital's noise is calibrated *once*, for every release it plans in the
run: first the evaluation noise, so that the run's evaluations alone spend the
run's share of the budget (``evaluation-share``); then the DP-SGD noise, so that all planned
training steps composed with those evaluations spend at most the run's target.
Epsilon is always recomputed from the full history: that is sequential RDP
composition, valid across rounds, release kinds and runs.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from fedcare.shared.errors import SiteTooSmallError

HistoryEntry = tuple[float, float, int]
"""One homogeneous stretch of releases: (noise multiplier, sample rate, steps)."""

ACCOUNTANT = "rdp"

EVALUATION_SAMPLE_RATE = 1.0
"""An evaluation release uses every held-out row: the Gaussian mechanism, no subsampling."""

_MAX_NOISE = 1e6
"""Largest noise multiplier calibration tries (as Opacus' own search)."""
_EPSILON_TOLERANCE = 0.01
"""How close below the target a calibrated plan lands (as Opacus' own search)."""
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
    """How one hospital spends a run's budget: DP-SGD steps and evaluation releases.

    Attributes
    ----------
    noise_multiplier : float
        DP-SGD's Gaussian noise std divided by the clipping norm.
    sample_rate : float
        Poisson sampling rate of each batch.
    steps_per_round : int
        Optimiser steps each round (local epochs x steps per epoch).
    rounds : int
        Rounds the calibration budgets for.
    target_epsilon : float
        Epsilon the whole run may spend, evaluation included.
    delta : float
        Delta of the guarantee.
    evaluation_noise_multiplier : float
        Noise std of an evaluation release divided by its L2 sensitivity (0: none planned).
    evaluation_releases : int
        Evaluation releases the run may make.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    target_epsilon: float
    delta: float
    evaluation_noise_multiplier: float = 0.0
    evaluation_releases: int = 0

    def round_entry(self) -> HistoryEntry:
        """Return the accountant entry one full round of training adds."""
        return (self.noise_multiplier, self.sample_rate, self.steps_per_round)

    def evaluation_entry(self) -> HistoryEntry:
        """Return the accountant entry one evaluation release adds (the Gaussian mechanism)."""
        return (self.evaluation_noise_multiplier, EVALUATION_SAMPLE_RATE, 1)

    def planned_history(self) -> list[HistoryEntry]:
        """Return every release the run plans, as accountant entries."""
        planned = [self.round_entry()] * self.rounds
        return planned + [self.evaluation_entry()] * self.evaluation_releases


@lru_cache(maxsize=256)
def plan_dp_sgd(  # noqa: PLR0913 - the run's privacy settings, each needed
    *,
    n_samples: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    target_epsilon: float,
    delta: float,
    evaluation_epsilon: float = 0.0,
    evaluation_releases: int = 0,
    reserved: tuple[HistoryEntry, ...] = (),
) -> DpSgdPlan:
    """Calibrate the noise so the whole run, evaluations included, spends at most the target.

    The evaluation noise is calibrated first, so that ``evaluation_releases``
    Gaussian releases alone spend ``evaluation_epsilon``; DP-SGD's noise is then
    the smallest that keeps every planned step composed with them within the
    target. Both searches end at the upper end of their bracket, so the planned
    epsilon never exceeds the target.

    Cached per process: the plan is a pure function of its arguments, and the
    search analyses a dozen candidate noise levels (seconds of CPU); in a
    simulation the virtual hospitals of one size share one search.

    ``reserved`` are the run's other releases (a DP fill statistic,
    :mod:`shared.imputation`): training gets what they and the evaluations leave.

    Raises
    ------
    ValueError
        If no noise level reaches the target ("The privacy budget is too low").
    """
    per_epoch = steps_per_epoch(n_samples, batch_size)
    sample_rate = 1.0 / per_epoch
    steps_per_round = local_epochs * per_epoch
    evaluations: list[HistoryEntry] = []
    evaluation_noise = 0.0
    if evaluation_releases > 0:
        evaluation_noise = calibrate_noise(
            lambda noise: [(noise, EVALUATION_SAMPLE_RATE, evaluation_releases)],
            target_epsilon=evaluation_epsilon,
            delta=delta,
        )
        evaluations = [(evaluation_noise, EVALUATION_SAMPLE_RATE, evaluation_releases)]
    noise = calibrate_noise(
        lambda noise: [(noise, sample_rate, steps_per_round * rounds), *evaluations, *reserved],
        target_epsilon=target_epsilon,
        delta=delta,
    )
    return DpSgdPlan(
        noise_multiplier=noise,
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        rounds=rounds,
        target_epsilon=target_epsilon,
        delta=delta,
        evaluation_noise_multiplier=evaluation_noise,
        evaluation_releases=evaluation_releases,
    )


def calibrate_noise(
    history_for: Callable[[float], list[HistoryEntry]], *, target_epsilon: float, delta: float
) -> float:
    """Smallest noise multiplier (within tolerance) whose history stays within ``target_epsilon``.

    The bisection of Opacus' ``get_noise_multiplier``, generalised to a history
    that holds other, fixed entries beside the one being calibrated; every
    epsilon it compares is Opacus' RDP accountant's (:func:`epsilon_spent`).

    Raises
    ------
    ValueError
        If no noise level reaches the target ("The privacy budget is too low").
    """
    with warnings.catch_warnings():
        # The search tries very large noise levels whose best RDP order is the
        # largest one; that only loosens (never understates) those candidates.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        low, high, high_epsilon = 0.0, 10.0, math.inf
        while high_epsilon > target_epsilon:
            high *= 2
            if high > _MAX_NOISE:
                raise ValueError("The privacy budget is too low.")
            high_epsilon = epsilon_spent(history_for(high), delta=delta)
        while target_epsilon - high_epsilon > _EPSILON_TOLERANCE:
            middle = (low + high) / 2
            epsilon = epsilon_spent(history_for(middle), delta=delta)
            if epsilon < target_epsilon:
                high, high_epsilon = middle, epsilon
            else:
                low = middle
    return high


def epsilon_spent(history: Sequence[HistoryEntry], *, delta: float) -> float:
    """Epsilon of the composed ``history`` at ``delta`` (0 for an empty history).

    Entries of the same mechanism (noise multiplier and sample rate) are merged
    first: RDP of the subsampled Gaussian is linear in the number of steps, so the
    result is identical and each mechanism is analysed once. The sum is Opacus'
    ``RDPAccountant.get_privacy_spent`` term for term, with each mechanism's
    one-step RDP cached (:func:`one_step_rdp`), so the result is the same to the bit.
    """
    from opacus.accountants import RDPAccountant  # heavy: only when accounting
    from opacus.accountants.analysis.rdp import get_privacy_spent

    steps_by_mechanism: dict[tuple[float, float], int] = {}
    for noise, rate, steps in history:
        key = (float(noise), float(rate))
        steps_by_mechanism[key] = steps_by_mechanism.get(key, 0) + int(steps)
    if not steps_by_mechanism:
        return 0.0
    rdp = sum([one_step_rdp(*key) * steps for key, steps in steps_by_mechanism.items()])
    epsilon, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(epsilon)


@lru_cache(maxsize=1024)
def one_step_rdp(noise_multiplier: float, sample_rate: float) -> NDArray[np.float64]:
    """Return Opacus' RDP of one step of the mechanism at its default orders (cached).

    This analysis is the slow part of accounting (tenths of a second: a series
    per fractional order); a hospital asks for the same mechanism's epsilon
    several times per round, and each round adds only steps.
    """
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    one_step = np.asarray(
        compute_rdp(
            q=sample_rate,
            noise_multiplier=noise_multiplier,
            steps=1,
            orders=RDPAccountant.DEFAULT_ALPHAS,
        ),
        dtype=np.float64,
    )
    one_step.setflags(write=False)  # shared by every caller: nobody may change it
    return one_step


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
