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

from fedcare.client.client_app import HospitalClient
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.keys import NodeConfigKey
from fedcare.simulations.builtin_data import BuiltinData

BUILTIN = BuiltinData()
"""The simulation's data: the built-in dataset's partitions, test set and baselines."""

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
        self._honest = HospitalClient(context, BUILTIN)
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
    return HospitalClient(context, BUILTIN).to_client()


hostile_app = ClientApp(client_fn=_client_fn)


def _simulate_with_attackers(out: Path, **settings: object) -> dict:
    from flwr.simulation import run_simulation

    from fedcare.server.server_app import make_server_app
    from fedcare.simulations.simulate import backend_config

    config = RunConfig.from_flat(
        {
            "partition": "iid",
            "num-server-rounds": 2,
            "secure-aggregation": False,
            "device": "cpu",
            "out-dir": str(out),
            **settings,  # type: ignore[dict-item]
        }
    )
    run_simulation(
        server_app=make_server_app(config, BUILTIN.reference),
        client_app=hostile_app,
        num_supernodes=config.data.hospitals,
        backend_config=backend_config(config),  # type: ignore[arg-type]
    )
    return json.loads((out / "summary.json").read_text())


def test_robust_mode_rejects_hostile_updates_and_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = _simulate_with_attackers(out, hospitals=5, aggregation="median")
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == [1, 2]
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    for record in rounds[1:]:
        # Only training: five small hospitals may refuse to evaluate (a class of their
        # held-out rows below min-count), which says nothing about their updates.
        failures = "\n".join(f for f in record["failures"] if f.startswith("train:"))
        assert "hospital-1: update rejected" in failures and "non-finite" in failures
        assert "hospital-2: update rejected" in failures and "shape" in failures
        assert "hospital-3: update rejected" in failures and "norm" in failures
        assert "hospital-4" not in failures and "hospital-5" not in failures
    final, initial = rounds[-1]["test_metrics"], rounds[0]["test_metrics"]
    assert final["auroc"] > initial["auroc"]
    audit = (out / "audit.jsonl").read_text()
    assert audit.count('"update-rejected"') == 6


def test_a_round_with_no_usable_update_stops_the_run_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = _simulate_with_attackers(out, hospitals=3, **{"on-failed-round": "stop"})
    assert summary["status"] == "stopped"
    assert summary["rounds"]["aggregated"] == []
    assert any("on-failed-round=stop" in error for error in summary["errors"]), summary["errors"]
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["asked"] and "no hospital returned a usable update" in "\n".join(
        rounds[1]["failures"]
    )
    assert not (out / "resume.json").exists()
