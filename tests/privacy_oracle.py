"""The tests' one privacy oracle: epsilon recomputed independently of fedcare's accounting.

It calls Opacus' RDP analysis (``compute_rdp`` and ``get_privacy_spent``) directly,
entry by entry, without fedcare's :func:`shared.privacy.epsilon_spent` and without
Opacus' accountant objects. A DP-SGD round is an entry ``(noise, sample rate,
steps)``; an evaluation release is the Gaussian mechanism ``(noise, 1.0, 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

HistoryEntry = tuple[float, float, int]


def independent_epsilon(history: Sequence[HistoryEntry], delta: float) -> float:
    """Epsilon of ``history`` composed (RDP summed over Opacus' default orders) at ``delta``."""
    if not history:
        return 0.0
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(
        np.asarray(compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=orders))
        for noise, rate, steps in history
    )
    epsilon, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)


def gaussian_epsilon(noise: float, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` Gaussian-mechanism releases of noise multiplier ``noise``."""
    return independent_epsilon([(noise, 1.0, releases)], delta)
