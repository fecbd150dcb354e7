"""Faults in a real deployment on 127.0.0.1: a hospital that hangs, and an aggregator
killed with SIGKILL mid-run and resumed.

Every process is real (CA, SuperLink with TLS and node authentication, three
SuperNodes); each test starts its own run against the shared federation, and the
fixture stops every process.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.client.ledger import PrivacyLedger
from fedcare.client.state_files import LEDGER_FILE
from fedcare.simulations.local_deployment import (
    DROPOUT_DEADLINE,
    LocalFederation,
    Processes,
    fedcare,
    start_local_federation,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOMY_CAP = 50.0
"""Every hospital may take part in every run of this module."""


def _roomy(name: str, site: dict) -> None:
    site["privacy"]["max-epsilon"] = ROOMY_CAP
    # Runs go on without a faulty hospital: each accepts a SecAgg+ sum of two.
    site["privacy"]["min-participants"] = 2


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("faults")
    processes = Processes(root / "logs")
    try:
        yield start_local_federation(root, processes, customize_site=_roomy)
    finally:
        processes.stop_all()


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _signal_group(federation: LocalFederation, name: str, signum: int) -> None:
    federation.processes._signal(name, signum)  # noqa: SLF001 - the harness' own helper


def test_a_hanging_hospital_is_left_behind_at_the_deadline(federation: LocalFederation) -> None:
    before = federation.train_replies("hospital-3")
    run, out = federation.start_run("run-hang", rounds=2, timeout=DROPOUT_DEADLINE)
    wait_for(
        lambda: federation.train_replies("hospital-3") >= before + 2,
        timeout=180,
        what="hospital-3 to finish SecAgg+ key sharing",
    )
    # SIGSTOP: the process is alive, its connection open, and it never answers.
    _signal_group(federation, "hospital-3", signal.SIGSTOP)
    try:
        assert run.wait(timeout=600) == 0, federation.processes.log("run-hang")[-3000:]
    finally:
        _signal_group(federation, "hospital-3", signal.SIGCONT)
    summary = _summary(out)
    assert summary["status"] == "completed"
    # A deployment has no held-out test set, so there is no round-0 record.
    first, last = json.loads((out / "metrics.json").read_text())["rounds"]
    assert first["asked"] == ["hospital-1", "hospital-2", "hospital-3"]
    # Where SecAgg+ was when the hospital froze decides whether round 1 could finish
    # without it (a reply frozen mid-upload is an error the SuperLink makes, reported under
    # the hospital it answers); either way the round says what happened, and the next one
    # goes on.
    if first["aggregated"]:
        assert sorted(first["hospitals"]) == ["hospital-1", "hospital-2"]
    else:
        assert any("model is unchanged" in line for line in first["failures"]), first
    assert any("hospital-3" in line for line in first["failures"]), first["failures"]
    assert last["aggregated"] and sorted(last["hospitals"]) == ["hospital-1", "hospital-2"]


def test_the_aggregator_killed_mid_run_resumes_from_its_last_round(
    federation: LocalFederation,
) -> None:
    run, out = federation.start_run("run-crash", rounds=3, timeout=60)
    wait_for(lambda: (out / "resume.json").is_file(), timeout=300, what="round 1 to complete")
    federation.processes.kill("aggregator")
    federation.processes.kill("run-crash")
    run.wait(timeout=60)
    point = json.loads((out / "resume.json").read_text())
    assert point["completed_round"] >= 1 and (out / point["checkpoint"]).is_file()
    assert not (out / "summary.json").exists()

    federation.start_aggregator("aggregator-restarted")
    resume = fedcare("run", "--state", str(federation.state), "--resume", str(out))
    code = federation.processes.run("run-resumed", resume, timeout=600)
    assert code == 0, federation.processes.log("run-resumed")[-3000:]
    summary = _summary(out)
    assert summary["status"] == "completed"
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["aggregated"] or r["failures"] for r in rounds)
    assert '"run-resumed"' in (out / "audit.jsonl").read_text()
    ledger_run = json.loads((out / "config.json").read_text())["ledger-run"]
    for name in ("hospital-1", "hospital-2", "hospital-3"):
        state = federation.root / name / "state"
        with PrivacyLedger(state / LEDGER_FILE) as ledger:
            booked = {
                entry.server_round
                for dataset in ledger.datasets()
                for entry in ledger.history(dataset.dataset_id)
                if entry.run_id == ledger_run
            }
        trained = {
            r["round"] for r in rounds if "steps" in r["hospitals"].get(name, {}).get("train", {})
        }
        assert trained <= booked, (name, trained, booked)
    assert os.stat(out / "resume.json").st_size > 0
