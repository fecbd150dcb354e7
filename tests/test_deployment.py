"""A real federation on 127.0.0.1: CA, aggregator with TLS and authentication, three hospitals.

Every process is real (Flower's SuperLink, SuperNodes, SuperExecs, ServerApp and
ClientApps), every port ephemeral, and every process is stopped by the fixture.
The tests run in order and share the federation, as a real one would:

1. a run with DP-SGD and SecAgg+ completes and writes its report;
2. hospital-3 is killed mid-round: the round completes without it (or, by SecAgg+ stage,
   halts cleanly), and the run goes on;
3. hospital-3 restarts; its durable ledger remembers its spent budget, so it refuses
   the next run's training, while strangers (unregistered key, plaintext, another CA)
   are turned away; the run completes with the other two;
4. marker values planted in hospital-1's data never appear anywhere on the
   aggregator's side: its logs, its state database, the run folders, the run output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fedcare.simulations.hospital_files import ID_COLUMN, DemoFiles
from fedcare.simulations.local_deployment import (
    DROPOUT_DEADLINE,
    LocalFederation,
    Processes,
    fedcare,
    free_port,
    start_local_federation,
    wait_for,
)

pytestmark = pytest.mark.integration

HOSPITALS = ("hospital-1", "hospital-2", "hospital-3")
CANARY_ID = "CANARY-PATIENT"
CANARY_VALUE = "23.456789"
TIGHT_CAP = 3.2
"""hospital-3's epsilon cap: room for one run at epsilon 3, not for a second."""


def _plant_canaries(files: DemoFiles) -> None:
    path = files.hospitals["hospital-1"]
    frame = pd.read_csv(path, dtype=str)
    frame[ID_COLUMN] = [f"{CANARY_ID}-{i:05d}" for i in range(len(frame))]
    frame.loc[7, "mean_radius"] = CANARY_VALUE
    frame.to_csv(path, index=False)


def _limits(name: str, site: dict) -> None:
    site["privacy"]["max-epsilon"] = TIGHT_CAP if name == "hospital-3" else 20.0
    # These tests show a run going on without one of three hospitals: each hospital
    # accepts a SecAgg+ sum of two (the default, 3, stops aggregating instead).
    site["privacy"]["min-participants"] = 2


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("federation")
    processes = Processes(root / "logs")
    try:
        yield start_local_federation(
            root, processes, customize_site=_limits, prepare_data=_plant_canaries
        )
    finally:
        processes.stop_all()


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_a_run_with_dp_and_secagg_completes_and_writes_its_report(
    federation: LocalFederation,
) -> None:
    run, out = federation.start_run("run-1", rounds=2, timeout=120)
    assert run.wait(timeout=420) == 0, federation.processes.log("run-1")[-3000:]
    summary = _summary(out)
    assert summary["status"] == "completed"
    assert summary["rounds"]["aggregated"] == [1, 2]
    assert summary["warnings"] == []
    assert summary["secure_aggregation"]["enabled"] and summary["privacy"]["differential_privacy"]
    assert sorted(summary["privacy"]["per_hospital"]) == list(HOSPITALS)
    assert all(0 < eps <= 3.0 for eps in summary["privacy"]["per_hospital"].values())
    assert summary["privacy"]["per_hospital_dataset"] == pytest.approx(
        summary["privacy"]["per_hospital"]
    )
    # The federation's metrics are DP releases, noisy by design; the model itself is
    # scored here, exactly, on every hospital's held-out rows.
    assert summary["final_source"] == "federated"
    assert 0.0 <= summary["final"]["federated"]["auroc"] <= 1.0
    assert _exact_auroc(federation, out) > 0.8
    assert (out / "model.safetensors").is_file() and (out / "report.png").is_file()
    # The operator sees a line per round; Flower's stream goes to the run folder's log.
    shown = federation.processes.log("run-1")
    assert "round 2/2:" in shown and "| epsilon spent:" in shown
    assert "[ROUND 1]" not in shown and "Secure aggregation" not in shown
    assert "[ROUND 1]" in (out / "fedcare.log").read_text()
    verify = fedcare(
        "aggregator",
        "audit",
        "verify",
        str(out / "audit.jsonl"),
        "--head",
        summary["audit"]["head"],
    )
    assert federation.processes.run("verify-aggregator-audit", verify, timeout=60) == 0


def _exact_auroc(federation: LocalFederation, out: Path) -> float:
    """The final model's AUROC on all hospitals' held-out rows, computed outside fedcare's path."""
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from sklearn.metrics import roc_auc_score

    from fedcare.client.hospital import fresh_model
    from fedcare.client.site import load_site
    from fedcare.client.site_settings import SiteSettings
    from fedcare.shared.config.run_config import RunConfig
    from fedcare.shared.evaluation import score_model
    from fedcare.shared.serialization import ModelLayout, set_weights

    config = RunConfig.from_flat({"contract": federation.contract.read_text(), "device": "cpu"})
    saved = load_file(str(out / "model.safetensors"))
    truth, scores = [], []
    for name in HOSPITALS:
        node = SiteSettings.load(federation.site(name)).node.to_node_config()
        site = load_site(node, config, "run-1")
        model = fresh_model(config, site)
        set_weights(model, [saved[n] for n in ModelLayout.of(model).names], what="final model")
        scored = score_model(model, site.data.evaluation, site.task, torch.device("cpu"))
        truth.append(scored.truth)
        scores.append(scored.scores)
    return float(roc_auc_score(np.concatenate(truth), np.concatenate(scores)))


def test_a_hospital_killed_mid_round_drops_out_and_the_run_goes_on(
    federation: LocalFederation,
) -> None:
    before = federation.train_replies("hospital-3")
    run, out = federation.start_run("run-dropout", rounds=2, timeout=DROPOUT_DEADLINE)
    # Two replies sent: SecAgg+'s key set-up and key sharing; it dies before sending its update.
    wait_for(
        lambda: federation.train_replies("hospital-3") >= before + 2,
        timeout=180,
        what="hospital-3 to finish SecAgg+ key sharing",
    )
    federation.processes.kill("hospital-3")
    assert run.wait(timeout=600) == 0, federation.processes.log("run-dropout")[-3000:]
    summary = _summary(out)
    assert summary["status"] == "completed"
    assert any("hospital-3" in warning for warning in summary["warnings"]), summary["warnings"]
    first, last = json.loads((out / "metrics.json").read_text())["rounds"]
    # Where SecAgg+ was when the hospital died decides whether round 1 could finish
    # without it; either way the round says what happened, and the run goes on.
    assert first["aggregated"] or "secure aggregation halted" in "\n".join(first["failures"])
    assert last["aggregated"] and sorted(last["hospitals"]) == ["hospital-1", "hospital-2"]


def _rogue(federation: LocalFederation, *flags: str) -> list[str]:
    from fedcare.shared.flower_process import flower_executable

    return [
        flower_executable("flower-supernode"),
        "--superlink",
        f"127.0.0.1:{federation.port}",
        "--max-retries",
        "2",
        "--max-wait-time",
        "20",
        "--port",
        str(free_port()),
        "--node-config",
        "partition-id=0",
        *flags,
    ]


def _start_strangers(federation: LocalFederation) -> dict[str, object]:
    from fedcare.server.certificate_authority import init_ca
    from fedcare.shared.flower_process import flower_environment
    from fedcare.shared.hospital_credentials import generate_node_key

    root = federation.root
    # A stranger with a key of its own that no operator ever recorded or registered.
    generate_node_key(root / "stranger")
    init_ca(root / "other-ca", name="impostor").issue_server_certificate(["127.0.0.1"])
    rogues = {
        "unregistered": _rogue(
            federation,
            "--root-certificates",
            str(federation.ca / "ca.crt"),
            "--auth-supernode-private-key",
            str(root / "stranger" / "node.key"),
        ),
        "plaintext": _rogue(federation, "--insecure"),
        "other-ca": _rogue(
            federation,
            "--root-certificates",
            str(root / "other-ca" / "ca.crt"),
            "--auth-supernode-private-key",
            str(federation.credentials("hospital-1") / "node.key"),
        ),
    }
    environment = flower_environment(root / "rogue-home")
    return {
        name: federation.processes.start(f"rogue-{name}", command, env=environment)
        for name, command in rogues.items()
    }


def test_a_restarted_hospital_refuses_past_its_budget_and_strangers_are_turned_away(
    federation: LocalFederation,
) -> None:
    federation.start_hospital("hospital-3")
    run, out = federation.start_run("run-refusal", rounds=1, timeout=120)
    for name, process in _start_strangers(federation).items():
        assert process.wait(timeout=120) != 0, f"{name} was let in"
    assert "Failed to activate SuperNode" in federation.processes.log("rogue-unregistered")
    assert "CERTIFICATE_VERIFY_FAILED" in federation.processes.log("rogue-other-ca")
    assert run.wait(timeout=420) == 0, federation.processes.log("run-refusal")[-3000:]
    summary = _summary(out)
    assert summary["status"] == "completed" and summary["rounds"]["aggregated"] == [1]
    # hospital-3 trains nothing past its cap; it may still answer the evaluation, a
    # release of its own that fits under the cap.
    training = summary["privacy"]["per_hospital_training"]
    assert sorted(name for name, spent in training.items() if spent) == ["hospital-1", "hospital-2"]
    refusals = [w for w in summary["warnings"] if "train: hospital-3" in w and "refuses" in w]
    assert refusals and f"cap of {TIGHT_CAP:g}" in refusals[0], summary["warnings"]
    budget = fedcare("hospital", "budget", "--config", str(federation.site("hospital-3")))
    assert federation.processes.run("budget-hospital-3", budget, timeout=60) == 0
    assert "hospital-3" in federation.processes.log("budget-hospital-3")
    audit = federation.root / "hospital-3" / "state" / "audit.jsonl"
    assert '"event":"round-refused"' in audit.read_text()
    verify = fedcare("hospital", "audit", "verify", str(audit))
    assert federation.processes.run("verify-hospital-3-audit", verify, timeout=60) == 0


def test_planted_values_never_reach_the_aggregator(federation: LocalFederation) -> None:
    aggregator_side = [federation.root / "logs" / "aggregator.log", *federation.state.rglob("*")]
    aggregator_side += list((federation.root / "logs").glob("run-*.log"))
    for run in ("run-1", "run-dropout", "run-refusal"):
        aggregator_side += list((federation.root / run).rglob("*"))
    files = [path for path in aggregator_side if path.is_file()]
    assert len(files) > 20
    for path in files:
        content = path.read_bytes()
        assert CANARY_ID.encode() not in content, path
        assert CANARY_VALUE.encode() not in content, path
    local = (federation.root / "data" / "hospital-1.csv").read_text()
    assert CANARY_ID in local and CANARY_VALUE in local  # the markers really were there
