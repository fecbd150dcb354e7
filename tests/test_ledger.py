"""Privacy ledger: composition over all runs, refusal, persistence, concurrency, crashes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from fedcare.client.ledger import PrivacyLedger
from fedcare.client.ledger_records import (
    InvalidReleaseError,
    LedgerCorruptError,
    LedgerError,
    LedgerSchemaError,
    Mechanism,
    ReleaseStatus,
    UnknownReservationError,
)
from fedcare.shared.errors import PrivacyBudgetExceededError
from fedcare.shared.privacy import HistoryEntry
from tests.privacy_oracle import independent_epsilon

REPO_ROOT = Path(__file__).resolve().parents[1]
DELTA = 1e-5
# Noise levels whose RDP analysis is quick (tens of ms), to keep the suite fast.
RUN_A = {"noise_multiplier": 1.5, "sample_rate": 0.02, "steps": 40}
RUN_B = {"noise_multiplier": 2.0, "sample_rate": 0.05, "steps": 15}


def entry_of(mechanism: dict[str, Any]) -> HistoryEntry:
    return (mechanism["noise_multiplier"], mechanism["sample_rate"], mechanism["steps"])


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "node" / "privacy-ledger.sqlite"


def reserve(
    ledger: PrivacyLedger,
    run_id: str,
    server_round: int,
    mechanism: dict[str, Any],
    *,
    dataset: str = "ds",
    delta: float = DELTA,
    cap: float = 100.0,
) -> Any:
    return ledger.reserve(
        dataset, run_id=run_id, server_round=server_round, delta=delta, cap_epsilon=cap, **mechanism
    )


def test_epsilon_composes_every_release_of_every_run(ledger_path: Path) -> None:
    runs = [("run-a", RUN_A)] * 3 + [("run-b", RUN_B)] * 4
    history: list[HistoryEntry] = []
    with PrivacyLedger(ledger_path) as ledger:
        reserve(ledger, "other", 1, RUN_B, dataset="another-dataset")
        for server_round, (run_id, mechanism) in enumerate(runs, start=1):
            history.append(entry_of(mechanism))
            reservation = reserve(ledger, run_id, server_round, mechanism)
            assert reservation.epsilon_after == pytest.approx(
                independent_epsilon(history, DELTA), rel=1e-9
            )
        assert ledger.spent("ds", delta=DELTA) == pytest.approx(
            independent_epsilon(history, DELTA), rel=1e-9
        )
        without_run_a = independent_epsilon(history[3:], DELTA)
        assert ledger.spent("ds", delta=DELTA) > without_run_a
        assert ledger.spent("never-used", delta=DELTA) == 0.0
        ledger.check()


def test_mixed_deltas_are_converted_at_the_delta_asked_for(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        first = reserve(ledger, "run-a", 1, RUN_A, delta=1e-5)
        second = reserve(ledger, "run-b", 1, RUN_B, delta=1e-6)
        both = [entry_of(RUN_A), entry_of(RUN_B)]
        assert first.epsilon_after == pytest.approx(independent_epsilon(both[:1], 1e-5), rel=1e-9)
        assert second.epsilon_after == pytest.approx(independent_epsilon(both, 1e-6), rel=1e-9)
        for delta in (1e-5, 1e-6, 1e-7):
            assert ledger.spent("ds", delta=delta) == pytest.approx(
                independent_epsilon(both, delta), rel=1e-9
            )
        (summary,) = ledger.datasets()
        assert summary.delta == 1e-6
        assert summary.epsilon == pytest.approx(second.epsilon_after, rel=1e-12)
        ledger.check()


def test_release_over_the_cap_is_refused_and_nothing_is_written(ledger_path: Path) -> None:
    two = independent_epsilon([entry_of(RUN_A)] * 2, DELTA)
    three = independent_epsilon([entry_of(RUN_A)] * 3, DELTA)
    cap = (two + three) / 2
    with PrivacyLedger(ledger_path) as ledger:
        reserve(ledger, "run-a", 1, RUN_A, cap=cap)
        reserve(ledger, "run-b", 1, RUN_A, cap=cap)
        previewed = ledger.preview("ds", delta=DELTA, **RUN_A)
        assert previewed == pytest.approx(three, rel=1e-9)
        assert len(ledger.history("ds")) == 2  # preview writes nothing
        with pytest.raises(PrivacyBudgetExceededError) as refused:
            reserve(ledger, "run-b", 2, RUN_A, cap=cap)
    message = str(refused.value)
    assert f"spent epsilon {two:.3f} of its {cap:.3f} cap" in message
    assert f"would bring it to {three:.3f}" in message and "Nothing was recorded" in message
    with PrivacyLedger(ledger_path) as reopened:
        assert len(reopened.history("ds")) == 2
        assert reopened.spent("ds", delta=DELTA) == pytest.approx(two, rel=1e-9)


def test_a_retried_round_is_recorded_twice(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        first = reserve(ledger, "run-a", 3, RUN_A)
        retry = reserve(ledger, "run-a", 3, RUN_A)
        assert retry.id != first.id
        assert [(e.run_id, e.server_round) for e in ledger.history("ds")] == [("run-a", 3)] * 2
        assert ledger.spent("ds", delta=DELTA) == pytest.approx(
            independent_epsilon([entry_of(RUN_A)] * 2, DELTA), rel=1e-9
        )


def test_entries_persist_across_reopening(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        kept = [reserve(ledger, "run-a", 1, RUN_A), reserve(ledger, "run-b", 1, RUN_B)]
        ledger.confirm(kept[0].id)
        ledger.confirm(kept[0].id)  # harmless twice
        before = ledger.history("ds")
    with PrivacyLedger(ledger_path) as reopened:
        after = reopened.history("ds")
        (summary,) = reopened.datasets()
        reopened.check()
    assert after == before
    assert [e.status for e in after] == [ReleaseStatus.RELEASED, ReleaseStatus.RESERVED]
    assert [e.epsilon_after for e in after] == [r.epsilon_after for r in kept]
    assert {(e.mechanism, e.accountant) for e in after} == {("subsampled-gaussian", "rdp")}
    assert (summary.dataset_id, summary.entries, summary.runs) == ("ds", 2, 2)
    assert summary.epsilon == kept[1].epsilon_after
    assert summary.last_recorded_at == after[1].recorded_at


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_multiplier", 0.0),
        ("noise_multiplier", float("nan")),
        ("sample_rate", 1.5),
        ("steps", 0),
        ("steps", 2.5),
        ("delta", 1.0),
        ("cap_epsilon", -1.0),
        ("server_round", -1),
    ],
)
def test_invalid_releases_are_refused(ledger_path: Path, field: str, value: object) -> None:
    arguments: dict[str, Any] = {
        "run_id": "r",
        "server_round": 1,
        "delta": DELTA,
        "cap_epsilon": 10.0,
        **RUN_A,
    }
    with PrivacyLedger(ledger_path) as ledger:
        with pytest.raises(InvalidReleaseError, match=field):
            ledger.reserve("ds", **{**arguments, field: value})
        with pytest.raises(UnknownReservationError, match="no reservation 42"):
            ledger.confirm(42)
        assert ledger.history("ds") == []


def _reserve_many(
    path: str, run_id: str, mechanism: dict[str, Any], count: int, start: Any
) -> None:
    with PrivacyLedger(Path(path)) as ledger:
        for server_round in range(count):
            # Both processes meet every ten releases (the first time after importing
            # Opacus), so their writes overlap however busy the machine is.
            if server_round % 10 == 0:
                start.wait(timeout=120)
            reserve(ledger, run_id, server_round, mechanism, dataset="shared", cap=1e6)


def test_two_processes_reserving_concurrently_lose_nothing(ledger_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    runs = {"run-a": RUN_A, "run-b": RUN_B}
    workers = [
        context.Process(target=_reserve_many, args=(str(ledger_path), run_id, mechanism, 50, start))
        for run_id, mechanism in runs.items()
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with PrivacyLedger(ledger_path) as ledger:
        entries = ledger.history("shared")
        ledger.check()  # every entry's epsilon covers all entries committed before it
        spent = ledger.spent("shared", delta=DELTA)
    assert len(entries) == 100 and len({e.id for e in entries}) == 100
    for run_id in runs:
        assert [e.server_round for e in entries if e.run_id == run_id] == list(range(50))
    assert len({e.run_id for e in entries[:50]}) == 2, "the two processes did not interleave"
    epsilons = [e.epsilon_after for e in entries]
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 100
    expected = independent_epsilon([entry_of(RUN_A)] * 50 + [entry_of(RUN_B)] * 50, DELTA)
    assert spent == pytest.approx(expected, rel=1e-9)
    assert epsilons[-1] == pytest.approx(expected, rel=1e-9)


# A fork server: it imports Opacus once (2-3 s), then forks one worker per line on stdin,
# so that the parent can kill dozens of writers in a few seconds. Each worker opens the
# ledger itself (never across fork) and reserves in a loop; its stdout line is the release.
_CRASH_CHILD = """
import os
import sys
from pathlib import Path

from fedcare.client.ledger import PrivacyLedger
from fedcare.shared.privacy import epsilon_spent

epsilon_spent([(1.0, 0.01, 1)], delta=1e-5)


def work(path: Path, worker: int) -> None:
    ledger = PrivacyLedger(path)
    server_round = 0
    while True:
        reservation = ledger.reserve(
            "crash", run_id=f"worker-{worker}", server_round=server_round,
            noise_multiplier=2.0 + worker % 2 / 2, sample_rate=0.01, steps=50,
            delta=1e-5, cap_epsilon=1e9,
        )
        # One unbuffered write (the flush): atomic on a pipe, even if killed right after.
        os.write(1, f"released {reservation.id}\\n".encode())
        server_round += 1


for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            work(Path(sys.argv[1]), int(line))
        finally:
            os._exit(1)
    os.write(1, f"worker {pid}\\n".encode())
    _, status = os.waitpid(pid, 0)
    os.write(1, f"exit {pid} {status}\\n".encode())
"""

KILLS = 40


def _kill_one_worker(
    server: subprocess.Popen[bytes], worker: int, delay: float, stderr: Path
) -> list[int]:
    """Start a worker, SIGKILL it after ``delay`` s; return the ids it reported released."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(f"{worker}\n".encode())
    server.stdin.flush()
    released: list[int] = []
    while line := server.stdout.readline():
        kind, *values = line.decode().split()
        if kind == "released":
            released.append(int(values[0]))
        elif kind == "worker":
            time.sleep(delay)
            _kill(int(values[0]))
        elif kind == "exit":
            status = int(values[1])
            killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            assert killed, f"a worker ended on its own: {stderr.read_text()}"
            return released
    pytest.fail(f"the crash child ended early: {stderr.read_text()}")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone: its exit status tells what happened


def _start_crash_child(
    script: Path, ledger_path: Path, stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(script), str(ledger_path)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


@pytest.mark.timeout(60)
def test_a_killed_writer_never_records_less_than_it_released(
    tmp_path: Path, ledger_path: Path
) -> None:
    script = tmp_path / "crash_child.py"
    script.write_text(_CRASH_CHILD)
    stderr_path = tmp_path / "crash_child.stderr"
    rng = random.Random(1729)
    released: list[int] = []
    with (
        stderr_path.open("wb") as stderr,
        _start_crash_child(script, ledger_path, stderr) as server,
    ):
        for worker in range(KILLS):
            released += _kill_one_worker(server, worker, rng.uniform(0.0, 0.25), stderr_path)
        assert server.stdin is not None
        server.stdin.close()
        assert server.wait(timeout=10) == 0, stderr_path.read_text()
    with PrivacyLedger(ledger_path) as ledger:
        ledger.check()  # SQLite integrity, and every epsilon covers the entries before it
        ids = [entry.id for entry in ledger.history("crash")]
        after_crashes = reserve(ledger, "after", 0, RUN_A, dataset="crash", cap=1e9)
    assert released, "no worker lived long enough to release anything"
    assert len(set(released)) == len(released) and len(set(ids)) == len(ids)
    assert set(released) <= set(ids), "an update was released but is missing from the ledger"
    assert len(ids) - len(released) <= KILLS  # at most the one in-flight reservation per kill
    assert after_crashes.id > max(ids)


def test_a_newer_schema_is_refused(ledger_path: Path) -> None:
    PrivacyLedger(ledger_path).close()
    with sqlite3.connect(ledger_path) as raw:
        raw.execute("UPDATE schema_version SET version = 99")
    raw.close()
    with pytest.raises(LedgerSchemaError, match="schema version 99, newer than the version 2"):
        PrivacyLedger(ledger_path)


def test_another_programs_database_is_refused(ledger_path: Path) -> None:
    ledger_path.parent.mkdir(parents=True)
    with sqlite3.connect(ledger_path) as raw:
        raw.execute("CREATE TABLE patients (id INTEGER)")
    raw.close()
    with pytest.raises(LedgerError, match="not a fedcare privacy ledger"):
        PrivacyLedger(ledger_path)


def _ledger_with_entries(path: Path, count: int) -> None:
    with PrivacyLedger(path) as ledger:
        for server_round in range(count):
            reserve(ledger, "run-a", server_round, RUN_A, cap=1e6)
    assert not path.with_name(path.name + "-wal").exists()  # all of it is in the main file


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 100), (2 * 4096, 4096)], ids=["header", "table-page"]
)
def test_garbage_in_the_file_is_detected(ledger_path: Path, offset: int, length: int) -> None:
    _ledger_with_entries(ledger_path, 20)
    with ledger_path.open("r+b") as file:
        file.seek(offset)
        file.write(random.Random(7).randbytes(length))
    with pytest.raises(LedgerCorruptError, match="restore the ledger from a backup") as caught:
        with PrivacyLedger(ledger_path) as ledger:
            ledger.check()
    assert str(ledger_path) in str(caught.value)


def test_an_understated_epsilon_is_detected(ledger_path: Path) -> None:
    _ledger_with_entries(ledger_path, 3)
    with sqlite3.connect(ledger_path) as raw:
        raw.execute("UPDATE releases SET epsilon_after = epsilon_after / 2 WHERE id = 2")
    raw.close()
    with PrivacyLedger(ledger_path) as ledger:
        with pytest.raises(LedgerCorruptError, match="entry 2 of dataset 'ds' records epsilon"):
            ledger.check()


def test_a_release_composes_with_its_fingerprint_and_its_label(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        ledger.reserve(
            "rows-1",
            label="st-mary",
            run_id="a",
            server_round=1,
            **RUN_A,
            delta=DELTA,
            cap_epsilon=1e6,
        )
        # The same rows under a new label, and new rows under the old label, meet it.
        renamed = ledger.spent("rows-1", label="renamed", delta=DELTA)
        changed = ledger.spent("rows-2", label="st-mary", delta=DELTA)
        stranger = ledger.spent("rows-3", label="other", delta=DELTA)
        assert renamed == changed == pytest.approx(independent_epsilon([entry_of(RUN_A)], DELTA))
        assert stranger == 0.0
        second = ledger.reserve(
            "rows-2",
            label="st-mary",
            run_id="b",
            server_round=1,
            **RUN_B,
            delta=DELTA,
            cap_epsilon=1e6,
        )
        both = independent_epsilon([entry_of(RUN_A), entry_of(RUN_B)], DELTA)
        assert second.epsilon_after == pytest.approx(both, rel=1e-9)
        assert [e.label for e in ledger.history("rows-2", label="st-mary")] == ["st-mary"] * 2


def test_an_evaluation_release_is_a_gaussian_entry_of_the_same_accountant(
    ledger_path: Path,
) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        ledger.reserve("ds", run_id="a", server_round=1, **RUN_A, delta=DELTA, cap_epsilon=1e6)
        evaluation = ledger.reserve(
            "ds", mechanism=Mechanism.GAUSSIAN, run_id="a", server_round=1,
            noise_multiplier=4.0, sample_rate=1.0, steps=1, delta=DELTA, cap_epsilon=1e6,
        )  # fmt: skip
        expected = independent_epsilon([entry_of(RUN_A), (4.0, 1.0, 1)], DELTA)
        assert evaluation.epsilon_after == pytest.approx(expected, rel=1e-9)
        assert [e.is_evaluation for e in ledger.history("ds")] == [False, True]
        ledger.check()
        with pytest.raises(InvalidReleaseError, match="sample_rate 1 and steps 1"):
            ledger.reserve(
                "ds", mechanism=Mechanism.GAUSSIAN, run_id="a", server_round=1,
                noise_multiplier=4.0, sample_rate=0.5, steps=1, delta=DELTA, cap_epsilon=1e6,
            )  # fmt: skip


def test_a_version_1_ledger_is_upgraded_and_keeps_its_budget(ledger_path: Path) -> None:
    with PrivacyLedger(ledger_path) as ledger:
        kept = reserve(ledger, "old", 1, RUN_A, dataset="st-mary")
    with sqlite3.connect(ledger_path) as raw:  # what fedcare with schema 1 wrote
        raw.execute("DROP INDEX releases_by_label")
        raw.execute("ALTER TABLE releases DROP COLUMN label")
        raw.execute("UPDATE schema_version SET version = 1")
    raw.close()
    with PrivacyLedger(ledger_path) as ledger:
        # Version 1 keyed on the label: the same label under a new fingerprint meets it.
        assert ledger.spent("sha256-of-rows", label="st-mary", delta=DELTA) == kept.epsilon_after
        assert ledger.history("st-mary")[0].label == "st-mary"
        ledger.check()
