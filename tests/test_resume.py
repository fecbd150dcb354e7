"""kill -9 the aggregator of a running federation, then resume it from its last round.

The simulation is the aggregator's process: killing its process group takes the
ServerApp and every virtual hospital down mid-round, as a power cut would. The
resumed run must continue from the checkpointed round with the same settings,
and the hospitals' privacy ledgers must keep every release, including a round
the aggregator lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from fedcare.client.ledger import PrivacyLedger
from fedcare.client.state_files import LEDGER_FILE

pytestmark = pytest.mark.integration

ROUNDS = 3


def _fedcare(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedcare", *args]


def _kill_after_first_round(run: Path) -> None:
    process = subprocess.Popen(
        _fedcare("simulate", "--rounds", str(ROUNDS), "--out", str(run)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (run / "resume.json").is_file():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the simulation never completed its first round")
            time.sleep(0.2)
    finally:
        # The whole session: the ServerApp, Ray and every virtual hospital.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "run"
    _kill_after_first_round(run)
    return run


def test_the_killed_run_left_a_loadable_checkpoint_and_resume_point(run: Path) -> None:
    point = json.loads((run / "resume.json").read_text())
    assert point["completed_round"] >= 1
    weights = load_file(str(run / point["checkpoint"]))
    assert set(weights) == {"weight", "bias"}
    assert not (run / "summary.json").exists()


def test_resume_refuses_changed_settings(run: Path) -> None:
    changed = subprocess.run(
        _fedcare("simulate", "--resume", str(run), "--rounds", "5"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert changed.returncode == 2
    assert "--resume continues a run with its own settings" in changed.stdout + changed.stderr


def test_resume_completes_the_run_and_ledgers_keep_every_release(run: Path) -> None:
    before = json.loads((run / "resume.json").read_text())["completed_round"]
    resumed = subprocess.run(
        _fedcare("simulate", "--resume", str(run)),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"]["planned"] == ROUNDS
    rounds = json.loads((run / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
    # Rounds after the resume point ran again; each either aggregated or says why not.
    for record in rounds[before + 1 :]:
        assert record["aggregated"] or record["failures"], record
    assert any(r["aggregated"] for r in rounds[before + 1 :])
    audit = (run / "audit.jsonl").read_text()
    assert '"run-resumed"' in audit
    ledger_run = json.loads((run / "config.json").read_text())["ledger-run"]
    for name, epsilon in summary["privacy"]["per_hospital"].items():
        with PrivacyLedger(run / "hospitals" / name / LEDGER_FILE) as ledger:
            entries = [e for e in ledger.history("", label=name) if e.run_id == ledger_run]
            booked = {e.server_round for e in entries}
            trained = {
                r["round"]
                for r in rounds
                if "steps" in r["hospitals"].get(name, {}).get("train", {})
            }
            # Nothing reported as trained is missing from the ledger (a lost round may add more).
            assert trained <= booked, (name, trained, booked)
            spent = ledger.spent("", label=name, delta=summary["privacy"]["delta"])
            assert spent >= epsilon - 1e-9
    again = subprocess.run(
        _fedcare("simulate", "--resume", str(run)), capture_output=True, text=True, check=False
    )
    assert again.returncode == 2
    assert "nothing to resume" in again.stdout + again.stderr
