"""A hospital's privacy state for the current run, kept in Flower's per-run node state.

It holds the DP-SGD plan, calibrated once at the first round, and the accountant
history of every step released so far; each round reads it and writes it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, Context

from shared.keys import StateKey
from shared.privacy import DpSgdPlan, HistoryEntry


@dataclass(frozen=True)
class PrivacyState:
    """The plan (``None`` before the first DP round) and the accountant history."""

    plan: DpSgdPlan | None = None
    history: tuple[HistoryEntry, ...] = ()


_PLAN_FIELDS = ("noise_multiplier", "sample_rate", "steps_per_round", "rounds", "target_epsilon", "delta")


def load_privacy_state(context: Context) -> PrivacyState:
    """Read this run's privacy state from the node's context (empty on the first round)."""
    record = context.state.config_records.get(StateKey.PRIVACY_STATE)
    if record is None:
        return PrivacyState()
    plan = None
    if StateKey.PLAN in record:
        values = record[StateKey.PLAN]
        plan = DpSgdPlan(
            noise_multiplier=float(values[0]),
            sample_rate=float(values[1]),
            steps_per_round=int(values[2]),
            rounds=int(values[3]),
            target_epsilon=float(values[4]),
            delta=float(values[5]),
        )
    history = tuple(
        (float(noise), float(rate), int(steps))
        for noise, rate, steps in zip(
            record[StateKey.NOISE_MULTIPLIERS], record[StateKey.SAMPLE_RATES], record[StateKey.STEPS], strict=True
        )
    )
    return PrivacyState(plan=plan, history=history)


def store_privacy_state(context: Context, state: PrivacyState) -> None:
    """Write ``state`` into the node's context for the next round of this run."""
    record = ConfigRecord(
        {
            StateKey.NOISE_MULTIPLIERS: [float(entry[0]) for entry in state.history],
            StateKey.SAMPLE_RATES: [float(entry[1]) for entry in state.history],
            StateKey.STEPS: [int(entry[2]) for entry in state.history],
        }
    )
    if state.plan is not None:
        record[StateKey.PLAN] = [float(getattr(state.plan, name)) for name in _PLAN_FIELDS]
    context.state.config_records[StateKey.PRIVACY_STATE] = record
