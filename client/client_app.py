"""The hospital's Flower ClientApp: thin glue between Flower messages and :mod:`client.hospital`.

Flower 1.41's SecAgg+ needs the legacy ``NumPyClient``. This module imports only
Flower at load time; torch and Opacus are imported when a hospital actually
trains or evaluates, so the SecAgg+ protocol-only stages (a fresh process each
in deployment) start fast.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp

from fedcare.client.egress import egress_guard_mod
from fedcare.client.privacy_state import load_plan, store_plan
from fedcare.client.secure_aggregation import secure_aggregation_mod


class HospitalClient(NumPyClient):
    """A hospital, as Flower's legacy API sees it.

    Parameters
    ----------
    context : Context
        The node's context: node config (which data) and per-run state (privacy history).
    """

    def __init__(self, context: Context) -> None:
        self._context = context

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:  # type: ignore[type-arg]
        """Train one round; return the delta, the row count and aggregate scalars."""
        from fedcare.client.session import HospitalSession

        session = HospitalSession(self._context.node_config, config, str(self._context.run_id))
        update = session.train(parameters, load_plan(self._context))
        if update.plan is not None:
            store_plan(self._context, update.plan)
        return update.delta, update.num_examples, update.metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:  # type: ignore[type-arg]
        """Score the global model on this hospital's held-out split; noisy statistics only."""
        from fedcare.client.session import HospitalSession

        session = HospitalSession(self._context.node_config, config, str(self._context.run_id))
        release = session.evaluate(parameters, load_plan(self._context))
        if release.plan is not None:
            store_plan(self._context, release.plan)
        return release.loss, release.num_examples, release.metrics


def _client_fn(context: Context) -> Client:
    return HospitalClient(context).to_client()


# The egress guard is outermost: it inspects exactly what Flower will send.
app = ClientApp(client_fn=_client_fn, mods=[egress_guard_mod, secure_aggregation_mod])
