"""Hospitals that fail mid-round under SecAgg+, in a real simulation.

Crashing hospitals run the real ClientApp stack (egress guard, SecAgg+ mod) and
finish SecAgg+'s key exchange, then fail while training, as a site that crashes
mid-round would. Above SecAgg+'s reconstruction threshold the round completes
without them; below it the round fails cleanly, the report says why, and the run
goes on or stops as configured.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import Context

from fedcare.client.client_app import HospitalClient
from fedcare.client.egress import egress_guard_mod
from fedcare.client.secure_aggregation import secure_aggregation_mod
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.keys import NodeConfigKey
from fedcare.simulations.builtin_data import BuiltinData

BUILTIN = BuiltinData()
"""The simulation's data: the built-in dataset's partitions, test set and baselines."""

pytestmark = pytest.mark.integration

CRASHING = {5: {0}, 3: {0, 1}}
"""Partitions that crash, by federation size: one of five (4 remain, above SecAgg+'s
threshold of 3), two of three (1 remains, below its threshold of 2)."""


class CrashingClient(NumPyClient):
    """A hospital that fails every time it is asked to train."""

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated crash while training")


def _client_fn(context: Context) -> Client:
    partition = int(str(context.node_config[NodeConfigKey.PARTITION_ID]))
    hospitals = int(str(context.node_config[NodeConfigKey.NUM_PARTITIONS]))
    if partition in CRASHING[hospitals]:
        return CrashingClient().to_client()
    return HospitalClient(context, BUILTIN).to_client()


crashing_app = ClientApp(client_fn=_client_fn, mods=[egress_guard_mod, secure_aggregation_mod])


def _simulate(out: Path, hospitals: int) -> dict:
    from flwr.simulation import run_simulation

    from fedcare.server.server_app import make_server_app
    from fedcare.simulations.simulate import backend_config

    config = RunConfig.from_flat(
        {
            "hospitals": hospitals,
            "partition": "iid",
            "num-server-rounds": 2,
            "round-timeout": 120,
            "device": "cpu",
            "out-dir": str(out),
        }
    )
    run_simulation(
        server_app=make_server_app(config, BUILTIN.reference),
        client_app=crashing_app,
        num_supernodes=hospitals,
        backend_config=backend_config(config),  # type: ignore[arg-type]
    )
    return json.loads((out / "summary.json").read_text())


def test_secagg_completes_when_enough_hospitals_remain(tmp_path: Path) -> None:
    summary = _simulate(tmp_path / "run", hospitals=5)
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == [1, 2]
    assert sorted(summary["privacy"]["per_hospital"]) == [
        "hospital-2",
        "hospital-3",
        "hospital-4",
        "hospital-5",
    ]
    warnings = "\n".join(summary["warnings"])
    # The crash's details stay at the hospital; the report says what kind of failure it was.
    assert "simulated crash" not in warnings
    # The error reply is reported with the node that sent it (it never named itself).
    assert re.search(r"train: node \d+: RuntimeError inside the hospital", warnings), warnings


def test_below_the_threshold_every_round_fails_cleanly_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    summary = _simulate(tmp_path / "run", hospitals=3)
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == []
    rounds = json.loads((tmp_path / "run" / "metrics.json").read_text())["rounds"]
    for record in rounds[1:]:
        failures = "\n".join(record["failures"])
        assert "the global model is unchanged" in failures, failures
        assert len(record["asked"]) == 3
    assert not (tmp_path / "run" / "resume.json").exists()
