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
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

HistoryEntry = tuple[float, float, int]
"""One homogeneous stretch of DP-SGD: (noise multiplier, sample rate, steps)."""

ACCOUNTANT = "rdp"


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


@lru_cache(maxsize=256)
def plan_dp_sgd(
    *,
    n_samples: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    target_epsilon: float,
    delta: float,
) -> DpSgdPlan:
    """Calibrate the noise multiplier so the whole run spends at most ``target_epsilon``.

    Cached per process: the plan is a pure function of its arguments, and the
    search analyses a dozen candidate noise levels (seconds of CPU); in a
    simulation the virtual hospitals of one size share one search.

    Returns
    -------
    DpSgdPlan
        Opacus' binary search returns the upper end of its bracket, so the
        planned epsilon never exceeds the target.

    Raises
    ------
    ValueError
        If no noise level reaches the target (Opacus: "The privacy budget is too low").
    """
    from opacus.accountants.utils import get_noise_multiplier  # heavy: only when planning

    per_epoch = steps_per_epoch(n_samples, batch_size)
    sample_rate = 1.0 / per_epoch
    steps_per_round = local_epochs * per_epoch
    with warnings.catch_warnings():
        # The search tries very large noise levels whose best RDP order is the
        # largest one; that only loosens (never understates) those candidates.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        noise = get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps_per_round * rounds,
            accountant=ACCOUNTANT,
        )
    return DpSgdPlan(
        noise_multiplier=float(noise),
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        rounds=rounds,
        target_epsilon=target_epsilon,
        delta=delta,
    )


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
