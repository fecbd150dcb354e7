"""The hospital's Flower ClientApp: thin glue between Flower messages and :mod:`client.hospital`.

Flower 1.41's SecAgg+ needs the legacy ``NumPyClient``. This module imports only
Flower at load time; torch and Opacus are imported when a hospital actually
trains or evaluates, so the SecAgg+ protocol-only stages (a fresh process each
in deployment) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp

from fedcare.client.egress import egress_guard_mod
from fedcare.client.plan_values import plan_from_values, plan_values
from fedcare.client.secure_aggregation import secure_aggregation_mod
from fedcare.shared.keys import StateKey

if TYPE_CHECKING:
    from fedcare.client.session import HospitalSession
    from fedcare.client.site import SiteSource
    from fedcare.shared.privacy import DpSgdPlan


class HospitalClient(NumPyClient):
    """A hospital, as Flower's legacy API sees it.

    Parameters
    ----------
    context : Context
        The node's context: node config (which data) and per-run state (privacy history).
    source : SiteSource | None
        Where a virtual hospital's data comes from, as a simulation passed it
        (:func:`make_client_app`); ``None`` for a real hospital.
    """

    def __init__(self, context: Context, source: SiteSource | None = None) -> None:
        self._context = context
        self._source = source

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:  # type: ignore[type-arg]
        """Train one round; return the delta, the row count and aggregate scalars."""
        update = self._session(config).train(parameters, load_plan(self._context))
        if update.plan is not None:
            store_plan(self._context, update.plan)
        return update.delta, update.num_examples, update.metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:  # type: ignore[type-arg]
        """Score the global model on this hospital's held-out split; noisy statistics only."""
        release = self._session(config).evaluate(parameters, load_plan(self._context))
        if release.plan is not None:
            store_plan(self._context, release.plan)
        return release.loss, release.num_examples, release.metrics

    def _session(self, config: dict) -> HospitalSession:  # type: ignore[type-arg]
        from fedcare.client.session import HospitalSession

        return HospitalSession(
            self._context.node_config, config, str(self._context.run_id), self._source
        )


def load_plan(context: Context) -> DpSgdPlan | None:
    """Return the DP-SGD plan this node calibrated earlier in the run, if any."""
    record = context.state.config_records.get(StateKey.PRIVACY_PLAN)
    return None if record is None else plan_from_values(record.get(StateKey.PLAN))


def store_plan(context: Context, plan: DpSgdPlan) -> None:
    """Keep ``plan`` in the node's state for the next rounds of this run."""
    record = ConfigRecord({StateKey.PLAN: plan_values(plan)})
    context.state.config_records[StateKey.PRIVACY_PLAN] = record


def make_client_app(source: SiteSource | None = None) -> ClientApp:
    """Build the hospitals' ClientApp; a simulation passes where its hospitals' data comes from.

    The egress guard is outermost: it inspects exactly what Flower will send.
    """

    def client_fn(context: Context) -> Client:
        return HospitalClient(context, source).to_client()

    return ClientApp(client_fn=client_fn, mods=[egress_guard_mod, secure_aggregation_mod])


app = make_client_app()
