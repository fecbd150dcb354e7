"""Keep a set of long-lived programs running together, as one command a service manager starts.

``fedcare hospital start`` runs two programs: Flower's SuperNode and fedcare's
worker. :func:`supervise` starts them in order, starts a program marked
``restart`` again whenever it exits (after a pause that grows while it keeps
failing), ends everything when a program not marked so exits, and stops every
program (SIGTERM, then SIGKILL after a grace period) on SIGINT or SIGTERM. The
programs stay in the supervisor's process group, so whoever stops that group (a
service manager, Ctrl-C in a terminal, a test harness) stops them all.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

logger = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
"""How long a program may take to stop after SIGTERM before it is killed."""
_POLL_SECONDS = 0.2
_MAX_PAUSE_SECONDS = 30.0
_HEALTHY_SECONDS = 60.0
"""A program that ran this long before exiting is restarted without delay."""


@dataclass(frozen=True)
class Program:
    """A program to keep running.

    Attributes
    ----------
    name : str
        How the log names it.
    command : Sequence[str]
        Its command line (never a secret on it: every local user can read it).
    restart : bool
        Start it again when it exits; otherwise its exit ends the supervision.
    """

    name: str
    command: Sequence[str]
    restart: bool = False


StartHook = Callable[[Program, int], None]
"""Called with each program and its process id whenever it is (re)started."""


class _Running:
    def __init__(self, program: Program, environment: Mapping[str, str]) -> None:
        self.program = program
        self.process = subprocess.Popen(list(program.command), env=dict(environment))
        self.started = time.monotonic()

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)


def supervise(
    programs: Sequence[Program], environment: Mapping[str, str], on_start: StartHook | None = None
) -> int:
    """Run ``programs`` until one that is not restarted exits, or a stop signal arrives.

    Returns
    -------
    int
        0 after a stop signal, else the exit code of the program that ended it.
    """
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    running: list[_Running] = []
    try:
        for program in programs:
            running.append(_start(program, environment, on_start))
        return _watch(running, environment, on_start, stop)
    finally:
        _stop_all(running)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start(
    program: Program, environment: Mapping[str, str], on_start: StartHook | None
) -> _Running:
    entry = _Running(program, environment)
    logger.info("started %s (pid %s)", program.name, entry.process.pid)
    if on_start is not None:
        on_start(program, entry.process.pid)
    return entry


def _watch(
    running: list[_Running],
    environment: Mapping[str, str],
    on_start: StartHook | None,
    stop: threading.Event,
) -> int:
    failures = dict.fromkeys(range(len(running)), 0)
    while not stop.wait(_POLL_SECONDS):
        for index, entry in enumerate(running):
            code = entry.process.poll()
            if code is None:
                continue
            if not entry.program.restart:
                logger.error("%s exited with code %s; stopping", entry.program.name, code)
                return code or 1
            quick = time.monotonic() - entry.started < _HEALTHY_SECONDS
            failures[index] = failures[index] + 1 if quick else 0
            pause = min(_MAX_PAUSE_SECONDS, 2.0 ** failures[index] - 1)
            logger.warning(
                "%s exited with code %s; starting it again in %.0f s",
                entry.program.name,
                code,
                pause,
            )
            if stop.wait(pause):
                return 0
            running[index] = _start(entry.program, environment, on_start)
    return 0


def _stop_all(running: list[_Running]) -> None:
    for entry in reversed(running):
        entry.signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for entry in reversed(running):
        try:
            entry.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            entry.signal(signal.SIGKILL)
            entry.process.wait()
