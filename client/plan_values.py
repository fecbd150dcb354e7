"""The DP-SGD plan a hospital calibrated for a run, as the flat list of numbers it is cached as.

The ClientApp keeps this list in Flower's node state between rounds
(:func:`client.client_app.store_plan`). The plan is a pure function of the run's
settings and the hospital's row count, so losing the cache (a SuperNode restart)
only costs a recalculation. What was *spent* is never kept here: it lives in the
durable privacy ledger.
"""

from __future__ import annotations

from fedcare.shared.privacy import DpSgdPlan

_PLAN_FIELDS = (
    "noise_multiplier",
    "sample_rate",
    "steps_per_round",
    "rounds",
    "target_epsilon",
    "delta",
    "evaluation_noise_multiplier",
    "evaluation_releases",
)


def plan_values(plan: DpSgdPlan) -> list[float]:
    """Return ``plan`` as the flat list of numbers it is cached as."""
    return [float(getattr(plan, name)) for name in _PLAN_FIELDS]


def plan_from_values(values: object) -> DpSgdPlan | None:
    """Return the plan cached as ``values``, or ``None`` if they hold no plan of this fedcare.

    A list of another length (cached by an older fedcare) or of anything but
    numbers means: calibrate again.
    """
    if not isinstance(values, list):
        return None
    numbers = [float(value) for value in values if isinstance(value, int | float)]
    if len(numbers) != len(values) or len(numbers) != len(_PLAN_FIELDS):
        return None
    return DpSgdPlan(
        noise_multiplier=numbers[0],
        sample_rate=numbers[1],
        steps_per_round=int(numbers[2]),
        rounds=int(numbers[3]),
        target_epsilon=numbers[4],
        delta=numbers[5],
        evaluation_noise_multiplier=numbers[6],
        evaluation_releases=int(numbers[7]),
    )
