"""The Flower apps ``flwr run .`` runs: fedcare's ServerApp and ClientApp on the built-in data.

``pyproject.toml`` names these for Flower users who simulate with Flower's own
CLI; they are fedcare's production apps given the built-in dataset as their data
source (:class:`simulations.builtin_data.BuiltinData`), exactly as
``fedcare simulate`` gives them. A real hospital never runs them: it accepts only
bundles naming its own ClientApp (:mod:`client.bundle`).
"""

from __future__ import annotations

from fedcare.client.client_app import make_client_app
from fedcare.server.server_app import make_server_app
from fedcare.simulations.builtin_data import BuiltinData

_BUILTIN = BuiltinData()

server_app = make_server_app(reference=_BUILTIN.reference)
"""The aggregator, reading Flower's run config, with the built-in test set and baselines."""

client_app = make_client_app(_BUILTIN)
"""The virtual hospitals, each with its partition (node config ``partition-id``)."""
