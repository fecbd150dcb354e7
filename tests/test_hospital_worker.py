"""The hospital's warm worker in a real federation on 127.0.0.1 (three hospitals, TLS, SecAgg+).

The tests run in order on one federation:

1. one worker process answers fifty messages (ten SecAgg+ rounds) and its resident
   memory stays within a bound; everything in the hospital's state folder, which
   existed before with wider permissions, is owner-only;
2. a hospital's data file changed between runs is read and checked again: a value
   outside the contract is refused by name, and the run goes on without it;
3. a worker killed while it handles a message is replaced by the supervisor, the
   message is answered with an error at once, and the run goes on with the
   hospital still in it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fedcare.simulations.local_deployment import (
    LocalFederation,
    Processes,
    start_local_federation,
    wait_for,
)

pytestmark = pytest.mark.integration

MESSAGES_PER_SECAGG_ROUND = 5
"""Four SecAgg+ stages and one evaluation (in a run that evaluates every round)."""
RSS_GROWTH_BOUND_MB = 64


def _roomy(name: str, site: dict) -> None:
    site["privacy"]["max-epsilon"] = 50.0
    if name == "hospital-1":  # a state folder that already existed, readable by all
        state = Path(site["hospital"]["state"])
        state.mkdir(parents=True)
        state.chmod(0o755)
        (state / "audit.jsonl").touch(mode=0o644)


def _owner_only(state: Path) -> list[str]:
    """Everything in ``state`` that group or others may read, write or enter."""
    paths = [state, *state.rglob("*")]
    return [f"{p} {p.stat().st_mode & 0o777:o}" for p in paths if p.stat().st_mode & 0o077]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("worker-federation")
    processes = Processes(root / "logs")
    try:
        yield start_local_federation(root, processes, customize_site=_roomy)
    finally:
        processes.stop_all()


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _messages(federation: LocalFederation, hospital: str) -> int:
    log = federation.processes.log(hospital)
    return log.count("Sending: train message") + log.count("Sending: evaluate message")


def test_one_worker_answers_fifty_messages_within_a_memory_bound(
    federation: LocalFederation,
) -> None:
    rounds = 50 // MESSAGES_PER_SECAGG_ROUND
    wait_for(lambda: federation.worker_pid("hospital-1") is not None, timeout=60, what="a worker")
    pid = federation.worker_pid("hospital-1")
    assert pid is not None
    # Hospitals evaluate in every round here, so that each round is five messages.
    run, out = federation.start_run(
        "run-fifty", rounds=rounds, timeout=120, extra=("--set", f"evaluation-rounds={rounds}")
    )
    wait_for(
        lambda: _messages(federation, "hospital-1") >= 2 * MESSAGES_PER_SECAGG_ROUND,
        timeout=300,
        what="hospital-1 to answer two rounds",
    )
    warm = _rss_mb(pid)
    assert run.wait(timeout=1500) == 0, federation.processes.log("run-fifty")[-3000:]
    assert _messages(federation, "hospital-1") >= 50
    assert federation.worker_pid("hospital-1") == pid  # one process answered them all
    assert _rss_mb(pid) - warm < RSS_GROWTH_BOUND_MB, (warm, _rss_mb(pid))
    summary = _summary(out)
    assert summary["status"] == "completed" and summary["warnings"] == []
    assert summary["rounds"]["aggregated"] == list(range(1, rounds + 1))
    stages = json.loads((out / "metrics.json").read_text())["rounds"][-1]["stage_seconds"]
    assert {"setup", "share_keys", "collect_masked_vectors", "unmask", "evaluate"} <= set(stages)
    state = federation.root / "hospital-1" / "state"
    assert {"privacy-ledger.db", "audit.jsonl", "runtime.secret", "node-config.toml"} <= {
        p.name for p in state.iterdir()
    }
    assert _owner_only(state) == []


def test_a_changed_data_file_is_read_and_checked_again(federation: LocalFederation) -> None:
    data = federation.root / "data" / "hospital-1.csv"
    original = data.read_text()
    frame = pd.read_csv(data)
    frame.loc[3, "mean_radius"] = 1e6  # far outside the contract's range
    frame.to_csv(data, index=False)
    try:
        run, out = federation.start_run("run-changed", rounds=1, timeout=90)
        assert run.wait(timeout=600) == 0, federation.processes.log("run-changed")[-3000:]
    finally:
        data.write_text(original)
    summary = _summary(out)
    refusals = [w for w in summary["warnings"] if "hospital-1: DataValidationError" in w]
    assert refusals, summary["warnings"]
    # Which column broke which rule stays at the hospital, in its own log.
    assert not any("mean_radius" in w for w in summary["warnings"])
    assert "mean_radius" in federation.processes.log("hospital-1")
    # The other two keep their SecAgg+ floor of three participants: without hospital-1
    # the round is not aggregated. Nothing of hospital-1's was trained or sent.
    assert summary["rounds"]["aggregated"] == []
    assert not summary["privacy"]["per_hospital_training"].get("hospital-1")


def _kill_while_handling(federation: LocalFederation, hospital: str, pid: int) -> bool:
    """SIGKILL the worker while it handles a message; return whether it had not yet replied."""
    inflight = federation.root / hospital / "state" / "worker-task.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            record = json.loads(inflight.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.01)
            continue
        os.kill(pid, signal.SIGKILL)
        return not record["replying"]
    raise TimeoutError(f"{hospital}'s worker never handled a message")


def test_a_worker_killed_mid_message_is_replaced_and_the_run_goes_on(
    federation: LocalFederation,
) -> None:
    before = federation.worker_pid("hospital-2")
    assert before is not None
    run, out = federation.start_run("run-killed", rounds=3, timeout=90)
    answered_at_once = _kill_while_handling(federation, "hospital-2", before)
    wait_for(
        lambda: federation.worker_pid("hospital-2") not in (None, before),
        timeout=60,
        what="the supervisor to start a new worker",
    )
    assert run.wait(timeout=900) == 0, federation.processes.log("run-killed")[-3000:]
    summary = _summary(out)
    assert summary["status"] == "completed"
    if answered_at_once:
        assert any("worker stopped while handling" in w for w in summary["warnings"])
    # A round may still lose a hospital to a slow upload; the run goes on with hospital-2
    # back in it: a later round aggregates all three.
    later = json.loads((out / "metrics.json").read_text())["rounds"][1:]
    assert any(
        r["aggregated"] and sorted(r["hospitals"]) == ["hospital-1", "hospital-2", "hospital-3"]
        for r in later
    ), summary["warnings"]
