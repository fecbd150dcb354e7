"""The DP-SGD plan a hospital calibrated for the current run, cached in Flower's node state.

The plan is a pure function of the run's settings and the hospital's row count,
so losing the cache (a SuperNode restart) only costs a recalculation. What was
*spent* is never kept here: it lives in the durable privacy ledger.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context

from fedcare.shared.keys import StateKey
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


def load_plan(context: Context) -> DpSgdPlan | None:
    """Return the plan this node calibrated earlier in the run, if any."""
    record = context.state.config_records.get(StateKey.PRIVACY_PLAN)
    if record is None:
        return None
    values = record[StateKey.PLAN]
    if len(values) != len(_PLAN_FIELDS):
        return None  # cached by an older fedcare: calibrate again
    return DpSgdPlan(
        noise_multiplier=float(values[0]),
        sample_rate=float(values[1]),
        steps_per_round=int(values[2]),
        rounds=int(values[3]),
        target_epsilon=float(values[4]),
        delta=float(values[5]),
        evaluation_noise_multiplier=float(values[6]),
        evaluation_releases=int(values[7]),
    )


def store_plan(context: Context, plan: DpSgdPlan) -> None:
    """Cache ``plan`` for the next rounds of this run."""
    values = [float(getattr(plan, name)) for name in _PLAN_FIELDS]
    context.state.config_records[StateKey.PRIVACY_PLAN] = ConfigRecord({StateKey.PLAN: values})
