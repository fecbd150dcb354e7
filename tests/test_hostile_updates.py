"""Robust mode in a real simulation: hostile hospitals send NaN, wrong shapes and huge
norms; the aggregator rejects each by name and the run completes on the honest ones.

The hostile hospitals train honestly, then corrupt their update after fedcare's
own client-side checks, as a compromised site (or a tampered build) would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.client import Client, ClientApp, NumPyClient
from flwr.common import Context

from client.client_app import HospitalClient
from shared.config import RunConfig
from shared.keys import NodeConfigKey

pytestmark = pytest.mark.integration

Attack = Callable[[list[np.ndarray]], list[np.ndarray]]

ATTACKS: dict[int, tuple[str, Attack]] = {
    0: ("NaN", lambda delta: [np.full_like(a, np.nan) for a in delta]),
    1: ("wrong shapes", lambda delta: [a.reshape(-1)[:1] for a in delta]),
    2: ("huge norm", lambda delta: [a + 1e4 for a in delta]),
}


class HostileClient(NumPyClient):
    """An honest hospital whose updates are corrupted on the way out."""

    def __init__(self, context: Context, attack: Attack) -> None:
        self._honest = HospitalClient(context)
        self._attack = attack

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        delta, rows, metrics = self._honest.fit(parameters, config)
        return self._attack(delta), rows, metrics

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        return self._honest.evaluate(parameters, config)


def _client_fn(context: Context) -> Client:
    partition = int(str(context.node_config[NodeConfigKey.PARTITION_ID]))
    if partition in ATTACKS:
        return HostileClient(context, ATTACKS[partition][1]).to_client()
    return HospitalClient(context).to_client()


hostile_app = ClientApp(client_fn=_client_fn)


@pytest.mark.parametrize("aggregation", ["median"])
def test_robust_mode_rejects_hostile_updates_and_completes(
    aggregation: str, tmp_path: Path
) -> None:
    from flwr.simulation import run_simulation

    from server.server_app import make_server_app
    from simulations.simulate import backend_config

    out = tmp_path / "run"
    config = RunConfig.from_flat(
        {
            "hospitals": 5,
            "partition": "iid",
            "num-server-rounds": 2,
            "secure-aggregation": False,
            "aggregation": aggregation,
            "device": "cpu",
            "out-dir": str(out),
        }
    )
    run_simulation(
        server_app=make_server_app(config),
        client_app=hostile_app,
        num_supernodes=5,
        backend_config=backend_config(config),  # type: ignore[arg-type]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == [1, 2]
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    for record in rounds[1:]:
        failures = "\n".join(record["failures"])
        assert "hospital-1: update rejected" in failures and "non-finite" in failures
        assert "hospital-2: update rejected" in failures and "shape" in failures
        assert "hospital-3: update rejected" in failures and "norm" in failures
        assert "hospital-4" not in failures and "hospital-5" not in failures
    final, initial = rounds[-1]["test_metrics"], rounds[0]["test_metrics"]
    assert final["auroc"] > initial["auroc"]
    audit = (out / "audit.jsonl").read_text()
    assert audit.count('"update-rejected"') == 6
