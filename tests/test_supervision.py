"""The supervisor restarts the program that may be restarted and stops everything together."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from fedcare.shared.supervision import Program, supervise

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_restartable_program_is_started_again_and_the_first_to_end_stops_all() -> None:
    started: list[tuple[str, int]] = []
    crasher = [sys.executable, "-c", "raise SystemExit(5)"]

    def record(program: Program, pid: int) -> None:
        started.append((program.name, pid))

    ender = [sys.executable, "-c", "import time; time.sleep(2.5); raise SystemExit(3)"]
    code = supervise(
        [Program("main", ender), Program("worker", crasher, restart=True), Program("idle", SLEEPER)],
        dict(os.environ),
        on_start=record,
    )
    assert code == 3
    assert [name for name, _ in started].count("worker") >= 2
    idle = next(pid for name, pid in started if name == "idle")
    time.sleep(0.2)
    assert not _alive(idle)


def test_sigterm_stops_every_program() -> None:
    started: list[int] = []
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    code = supervise(
        [Program("a", SLEEPER), Program("b", SLEEPER, restart=True)],
        dict(os.environ),
        on_start=lambda _program, pid: started.append(pid),
    )
    assert code == 0 and len(started) == 2
    assert not any(_alive(pid) for pid in started)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped child is gone; an unreaped one would be a zombie, which supervise never leaves.
    with open(f"/proc/{pid}/status") as status:
        return "zombie" not in status.read()
