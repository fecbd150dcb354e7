"""Programs run as one service: ready in order, private files, restarts, stopped together."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from pathlib import Path

import pytest

from fedcare.shared.supervision import Program, ProgramFailed, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
ENVIRONMENT = dict(os.environ)


def test_a_restartable_program_is_started_again_and_any_other_exit_stops_all() -> None:
    started: list[tuple[str, int]] = []
    crasher = [sys.executable, "-c", "raise SystemExit(5)"]
    ender = [sys.executable, "-c", "import time; time.sleep(2.5); raise SystemExit(3)"]
    with Supervisor(on_start=lambda p, pid: started.append((p.name, pid))) as supervisor:
        supervisor.start(Program("main", ender, ENVIRONMENT))
        supervisor.start(Program("idle", SLEEPER, ENVIRONMENT))
        supervisor.start(Program("worker", crasher, ENVIRONMENT, restart=True))
        assert supervisor.wait() == 1
        assert supervisor.failure() == "main exited with code 3"
    assert [name for name, _ in started].count("worker") >= 2
    idle = next(pid for name, pid in started if name == "idle")
    assert not _alive(idle)


def test_sigterm_stops_every_program_and_files_they_write_are_owner_only(tmp_path: Path) -> None:
    started: list[int] = []
    writer = [
        sys.executable,
        "-c",
        f"open({str(tmp_path / 'made')!r}, 'w'); import time; time.sleep(60)",
    ]
    handler = signal.getsignal(signal.SIGTERM)  # Ray, when it ran earlier, installed its own
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    with Supervisor(on_start=lambda _p, pid: started.append(pid)) as supervisor:
        supervisor.start(Program("a", writer, ENVIRONMENT, ready=(tmp_path / "made").exists))
        supervisor.start(Program("b", SLEEPER, ENVIRONMENT, restart=True))
        assert supervisor.wait() == 0 and supervisor.stopping
        supervisor.start(Program("never", SLEEPER, ENVIRONMENT))  # nothing starts once stopping
    assert len(started) == 2 and not any(_alive(pid) for pid in started)
    assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o600
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_program_that_dies_or_hangs_before_ready_is_reported() -> None:
    with Supervisor() as supervisor, pytest.raises(ProgramFailed, match="exited with code 3"):
        crasher = [sys.executable, "-c", "raise SystemExit(3)"]
        supervisor.start(Program("broken", crasher, ENVIRONMENT, ready=lambda: False))
    with Supervisor() as supervisor, pytest.raises(ProgramFailed, match="not ready within 1 s"):
        supervisor.start(Program("slow", SLEEPER, ENVIRONMENT, lambda: False, 1.0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/status") as status:
        return "zombie" not in status.read()
