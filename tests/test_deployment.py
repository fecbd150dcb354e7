"""A real federation on 127.0.0.1: CA, aggregator with TLS and authentication, three hospitals.

Every process is real (Flower's SuperLink, SuperNodes, SuperExecs, ServerApp and
ClientApps), every port ephemeral, and every process is stopped by the fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from shared.config import DataSettings
from simulations.hospital_files import write_demo_hospitals
from tests.deployment import Processes, fedcare, free_port, port_open, wait_for

pytestmark = pytest.mark.integration

HOSPITALS = ("hospital-1", "hospital-2", "hospital-3")


@dataclass
class Federation:
    """Paths and processes of one running test federation."""

    root: Path
    processes: Processes
    port: int
    contract: Path

    @property
    def state(self) -> Path:
        return self.root / "aggregator"

    @property
    def ca(self) -> Path:
        return self.root / "ca"

    def site(self, name: str) -> Path:
        return self.root / name / "site.toml"

    def start_hospital(self, name: str) -> None:
        self.processes.start(name, fedcare("hospital", "start", "--config", str(self.site(name))))

    def run(self, name: str, *arguments: str, timeout: float = 420) -> int:
        command = fedcare("run", "--state", str(self.state), "--contract", str(self.contract), *arguments)
        return self.processes.run(name, command, timeout=timeout)


def _write_site(root: Path, name: str, port: int, data: Path, contract: Path) -> None:
    site = {
        "hospital": {
            "name": name,
            "aggregator": f"127.0.0.1:{port}",
            "credentials": str(root / "ca" / "hospitals" / name),
            "data": str(data),
            "contract": str(contract),
            "device": "cpu",
            "state": str(root / name / "state"),
            "runtime-port": free_port(),
        },
        "privacy": {"max-epsilon": 5.0, "delta": 1e-5, "require-secure-aggregation": True},
    }
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "site.toml").write_text(tomli_w.dumps(site), encoding="utf-8")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("federation")
    processes = Processes(root / "logs")
    port = free_port()
    files = write_demo_hospitals(root / "data", DataSettings())
    fed = Federation(root=root, processes=processes, port=port, contract=files.contract)
    try:
        assert processes.run("ca-init", fedcare("ca", "init", "--dir", str(fed.ca), "--name", "test"), timeout=60) == 0
        assert processes.run("ca-server", fedcare("ca", "server", "--dir", str(fed.ca), "--host", "127.0.0.1"), timeout=60) == 0
        processes.start(
            "aggregator",
            fedcare("aggregator", "start", "--state", str(fed.state), "--tls", str(fed.ca / "server"), "--port", str(port)),
        )
        wait_for(lambda: port_open(port), timeout=60, what="the aggregator to listen")
        for name in HOSPITALS:
            add = fedcare("ca", "add-hospital", name, "--dir", str(fed.ca), "--aggregator", f"127.0.0.1:{port}")
            assert processes.run(f"add-{name}", add, timeout=60) == 0
            register = fedcare("aggregator", "register", name, "--state", str(fed.state), "--ca", str(fed.ca))
            assert processes.run(f"register-{name}", register, timeout=60) == 0, processes.log(f"register-{name}")
            _write_site(root, name, port, files.hospitals[name], files.contract)
            fed.start_hospital(name)
        yield fed
    finally:
        processes.stop_all()


def test_a_run_with_dp_and_secagg_completes_and_writes_its_report(federation: Federation) -> None:
    out = federation.root / "run-1"
    code = federation.run("run-1", "--hospitals", "3", "--rounds", "2", "--out", str(out), "--set", "round-timeout=120")
    assert code == 0, federation.processes.log("run-1")[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == [1, 2]
    assert summary["secure_aggregation"]["enabled"] and summary["privacy"]["differential_privacy"]
    assert sorted(summary["privacy"]["per_hospital"]) == list(HOSPITALS)
    assert all(0 < eps <= 3.0 for eps in summary["privacy"]["per_hospital"].values())
    assert summary["final_source"] == "federated"
    assert summary["final"]["federated"]["auroc"] > 0.8
    assert (out / "model.safetensors").is_file() and (out / "report.png").is_file()


def _rogue(federation: Federation, name: str, *flags: str) -> list[str]:
    from shared.flower_process import flower_executable

    return [
        flower_executable("flower-supernode"), "--superlink", f"127.0.0.1:{federation.port}",
        "--max-retries", "2", "--max-wait-time", "20", "--port", str(free_port()),
        "--node-config", "partition-id=0", *flags,
    ]


def test_strangers_are_refused_and_cannot_disturb_a_run(federation: Federation) -> None:
    from server.certificate_authority import init_ca

    root = federation.root
    stranger = federation.processes.run(
        "add-stranger",
        fedcare("ca", "add-hospital", "stranger", "--dir", str(federation.ca), "--aggregator", "127.0.0.1:1"),
        timeout=60,
    )
    assert stranger == 0
    other_ca = init_ca(root / "other-ca", name="impostor")
    other_ca.issue_server_certificate(["127.0.0.1"])
    key = str(federation.ca / "hospitals" / "stranger" / "node.key")
    ca_cert = str(federation.ca / "ca.crt")
    rogues = {
        "unregistered": _rogue(federation, "unregistered", "--root-certificates", ca_cert, "--auth-supernode-private-key", key),
        "plaintext": _rogue(federation, "plaintext", "--insecure"),
        "other-ca": _rogue(
            federation, "other-ca", "--root-certificates", str(root / "other-ca" / "ca.crt"),
            "--auth-supernode-private-key", str(federation.ca / "hospitals" / "hospital-1" / "node.key"),
        ),
    }
    out = root / "run-strangers"
    run = federation.processes.start(
        "run-strangers",
        fedcare("run", "--state", str(federation.state), "--contract", str(federation.contract), "--hospitals", "3",
                "--rounds", "1", "--out", str(out), "--set", "round-timeout=120"),
    )
    from shared.flower_process import flower_environment

    environment = flower_environment(root / "rogue-home")
    started = {
        name: federation.processes.start(f"rogue-{name}", command, env=environment) for name, command in rogues.items()
    }
    for name, process in started.items():
        assert process.wait(timeout=120) != 0, f"{name} was let in"
    assert "Failed to activate SuperNode" in federation.processes.log("rogue-unregistered")
    assert "CERTIFICATE_VERIFY_FAILED" in federation.processes.log("rogue-other-ca")
    assert run.wait(timeout=420) == 0, federation.processes.log("run-strangers")[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"]["aggregated"] == [1]
    assert sorted(summary["privacy"]["per_hospital"]) == list(HOSPITALS)


def test_a_hospital_killed_mid_round_drops_out_and_the_run_goes_on(federation: Federation) -> None:
    out = federation.root / "run-dropout"

    def replies_sent() -> int:
        return federation.processes.log("hospital-3").count("Sending: train message")

    before = replies_sent()
    run = federation.processes.start(
        "run-dropout",
        fedcare("run", "--state", str(federation.state), "--contract", str(federation.contract), "--hospitals", "3",
                "--rounds", "2", "--out", str(out), "--set", "round-timeout=30"),
    )
    # Two replies sent: SecAgg+'s key set-up and key sharing; it dies before sending its update.
    wait_for(lambda: replies_sent() >= before + 2, timeout=180, what="hospital-3 to finish SecAgg+ key sharing")
    federation.processes.kill("hospital-3")
    assert run.wait(timeout=600) == 0, federation.processes.log("run-dropout")[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == [1, 2]
    dropped = [w for w in summary["warnings"] if "hospital-3" in w]
    assert dropped, summary["warnings"]
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert "hospital-3" not in rounds[-1]["hospitals"]
    assert sorted(rounds[-1]["hospitals"]) == ["hospital-1", "hospital-2"]
