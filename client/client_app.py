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

from client.privacy_state import load_privacy_state, store_privacy_state
from client.secure_aggregation import secure_aggregation_mod


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
        from client.hospital import parse_instruction, train_round
        from client.site import load_site

        run_config = parse_instruction(config)
        site = load_site(self._context.node_config, run_config)
        update = train_round(parameters, run_config, site, load_privacy_state(self._context))
        store_privacy_state(self._context, update.privacy)
        return update.delta, update.num_examples, update.metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:  # type: ignore[type-arg]
        """Score the global model on this hospital's held-out split."""
        from client.hospital import evaluate_round, parse_instruction
        from client.site import load_site

        run_config = parse_instruction(config)
        site = load_site(self._context.node_config, run_config)
        return evaluate_round(parameters, run_config, site, load_privacy_state(self._context).history)


def _client_fn(context: Context) -> Client:
    return HospitalClient(context).to_client()


app = ClientApp(client_fn=_client_fn, mods=[secure_aggregation_mod])
