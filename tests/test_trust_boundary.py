"""Outsiders and the operator against the hospitals, on a real federation on 127.0.0.1.

Every hospital runs Flower's SuperNode in process isolation with a runtime secret,
and fedcare's worker beside it. The tests share one federation and run in order:

1. a task taken from a hospital's local runtime port without the secret is refused;
2. a run whose bundle ships code (it would write a marker file and read the data
   file), submitted by the operator, is refused by every hospital before anything
   of it is used; the refusals are in each hospital's audit log and in the report;
3. a hospital started from a folder holding ``client/`` and ``fedcare/`` packages
   never imports them;
4. a hospital that requires approval refuses a run it has not approved, and takes
   part once ``fedcare hospital approve HASH`` adds the hash the run printed;
5. a run outside a hospital's policy is refused by that hospital, and the report
   says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from fedcare.client.executor import runtime_client
from fedcare.server.submission import app_pyproject
from fedcare.server.superlink import CONNECTION, HospitalRegistry, flwr_home
from fedcare.shared.audit import read_audit_log
from fedcare.shared.config import RunConfig
from fedcare.shared.flower_process import flower_environment, flower_executable
from fedcare.simulations.local_deployment import (
    LocalFederation,
    Processes,
    fedcare,
    start_local_federation,
    wait_for,
)

pytestmark = pytest.mark.integration

HOSPITALS = ("hospital-1", "hospital-2", "hospital-3")
MARKER = "fedcare-trust-marker"
MAX_ROUNDS = 2
"""hospital-2's policy: runs of at most this many rounds."""


def _policies(name: str, site: dict[str, Any]) -> None:
    site["privacy"]["max-epsilon"] = 50.0  # room for every run here; budgets are not tested
    if name == "hospital-1":
        site["policy"] = {"require-approval": True}
    if name == "hospital-2":
        site["policy"] = {"max-rounds": MAX_ROUNDS}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("trust")
    processes = Processes(root / "logs")
    try:
        yield start_local_federation(root, processes, customize_site=_policies)
    finally:
        processes.stop_all()


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def _audit(federation: LocalFederation, hospital: str) -> list[dict[str, Any]]:
    log = federation.root / hospital / "state" / "audit.jsonl"
    return [entry.fields | {"event": entry.event} for entry in read_audit_log(log)]


def _markers(federation: LocalFederation) -> list[Path]:
    return [*federation.root.rglob(f"{MARKER}*"), *Path("/tmp").glob(f"{MARKER}*")]


def _runtime_port(federation: LocalFederation, hospital: str) -> int:
    import tomllib

    return int(tomllib.loads(federation.site(hospital).read_text())["hospital"]["runtime-port"])


def test_a_task_taken_without_the_runtime_secret_is_refused(federation: LocalFederation) -> None:
    from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullTaskInputRequest

    address = f"127.0.0.1:{_runtime_port(federation, 'hospital-1')}"
    wait_for(lambda: _port_answers(address), timeout=120, what="hospital-1's runtime port")
    stranger = runtime_client(address)
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        stranger.AcquireTask(AcquireTaskRequest(supported_task_types=["flwr-clientapp"]))
    guesser = runtime_client(address, token="00" * 16)
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        guesser.PullTaskInput(PullTaskInputRequest())


def _port_answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _code_bundle(federation: LocalFederation, out: Path) -> Path:
    """An app folder that keeps fedcare's configuration but ships its own ClientApp."""
    names = HospitalRegistry(federation.state).as_setting()
    config = RunConfig.from_flat(
        {
            "contract": federation.contract.read_text(),
            "hospital-names": names,
            "out-dir": str(out),
            "num-server-rounds": 1,
            "round-timeout": 60.0,
        }
    )
    pyproject = app_pyproject(config, "0.1.0")
    pyproject["tool"]["flwr"]["app"]["components"]["clientapp"] = "client.client_app:app"
    app = federation.root / "code-bundle"
    (app / "client").mkdir(parents=True)
    (app / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    (app / "client" / "__init__.py").write_text("")
    marker = Path("/tmp") / f"{MARKER}-bundle"
    (app / "client" / "client_app.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        f"pathlib.Path({str(federation.root / 'data' / 'hospital-1.csv')!r}).read_text()\n"
        "from flwr.clientapp import ClientApp\napp = ClientApp()\n"
    )
    return app


def test_a_bundle_that_ships_code_is_refused_by_every_hospital(
    federation: LocalFederation,
) -> None:
    out = federation.root / "run-code"
    app = _code_bundle(federation, out)
    command = [flower_executable("flwr"), "run", str(app), CONNECTION, "--stream"]
    environment = flower_environment(flwr_home(federation.state))
    code = federation.processes.run("run-code", command, timeout=600, env=environment)
    assert code == 0, federation.processes.log("run-code")[-3000:]
    warnings = "\n".join(_summary(out)["warnings"])
    for hospital in HOSPITALS:
        assert re.search(rf"{hospital}: run \d+: the bundle holds files other than", warnings)
        refused = [e for e in _audit(federation, hospital) if e["event"] == "run-refused"]
        assert refused and refused[-1]["bundle"] is True
        assert "client/client_app.py" in refused[-1]["reason"]
        assert not list((federation.root / hospital / "state").rglob("client_app.py"))
    assert _markers(federation) == []


def test_a_hospital_started_beside_hostile_packages_never_imports_them(
    federation: LocalFederation,
) -> None:
    hostile = federation.root / "hostile-cwd"
    for package in ("client", "fedcare", "fedcare/client"):
        (hostile / package).mkdir(parents=True, exist_ok=True)
        marker = Path("/tmp") / f"{MARKER}-{package.replace('/', '-')}"
        (hostile / package / "__init__.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        )
    (hostile / "client" / "client_app.py").write_text((hostile / "client/__init__.py").read_text())
    federation.processes.stop("hospital-3")
    federation.start_hospital("hospital-3", cwd=hostile)
    wait_for(
        lambda: "worker ready" in federation.processes.log("hospital-3"),
        timeout=120,
        what="hospital-3's worker to start from the hostile folder",
    )
    assert _markers(federation) == []


def _hash_printed(federation: LocalFederation, name: str) -> str:
    found = re.search(r"run configuration hash: ([0-9a-f]{64})", federation.processes.log(name))
    assert found, federation.processes.log(name)[-2000:]
    return found.group(1)


def test_an_unapproved_run_is_refused_until_the_hospital_approves_its_hash(
    federation: LocalFederation,
) -> None:
    run, out = federation.start_run("run-unapproved", rounds=1, timeout=90)
    assert run.wait(timeout=600) == 0, federation.processes.log("run-unapproved")[-3000:]
    summary = _summary(out)
    config_hash = _hash_printed(federation, "run-unapproved")
    assert any("hospital-1" in w and config_hash in w for w in summary["warnings"])
    assert sorted(summary["privacy"]["per_hospital"]) == ["hospital-2", "hospital-3"]
    approve = fedcare(
        "hospital", "approve", config_hash, "--config", str(federation.site("hospital-1"))
    )
    assert federation.processes.run("approve", approve, timeout=120) == 0
    run, out = federation.start_run("run-approved", rounds=1, timeout=90)
    assert run.wait(timeout=600) == 0, federation.processes.log("run-approved")[-3000:]
    assert _hash_printed(federation, "run-approved") == config_hash
    summary = _summary(out)
    assert summary["warnings"] == [] and sorted(summary["privacy"]["per_hospital"]) == list(
        HOSPITALS
    )
    runs = fedcare("hospital", "runs", "--config", str(federation.site("hospital-1")))
    assert federation.processes.run("runs-hospital-1", runs, timeout=120) == 0
    assert "took part" in federation.processes.log("runs-hospital-1")
    assert _markers(federation) == []  # hospital-3, started beside hostile packages, took part


def test_a_run_outside_a_hospitals_policy_is_refused_and_the_report_says_why(
    federation: LocalFederation,
) -> None:
    run, out = federation.start_run("run-long", rounds=MAX_ROUNDS + 1, timeout=90)
    assert run.wait(timeout=900) == 0, federation.processes.log("run-long")[-3000:]
    warnings = "\n".join(_summary(out)["warnings"])
    assert f"hospital-2 refuses: the run has {MAX_ROUNDS + 1} rounds, above its limit" in warnings
    assert "hospital-1 refuses: it takes part only in approved runs" in warnings
    refused = [e for e in _audit(federation, "hospital-2") if e["event"] == "run-refused"]
    assert refused and "rounds" in refused[-1]["reason"]
