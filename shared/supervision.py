"""Run long-lived programs as one service: start each once the previous is ready, stop all together.

A service is several programs: the aggregator runs Flower's SuperLink, its
executor and the nginx front; a hospital runs Flower's SuperNode and fedcare's
worker. They start in order, each checked ready before the next starts. A
program marked ``restart`` is started again whenever it exits (after a pause that
grows while it keeps failing at once); if any other program exits, or the service
gets SIGINT or SIGTERM, all are stopped, newest first (SIGTERM, then SIGKILL after
a grace period). The programs stay in this process's process group, so a signal to
the group (a terminal's Ctrl-C, a service manager, a test harness) reaches every
one of them too, and none outlives a SIGKILL of the group. Every program is
started with umask 077: whatever it creates (databases, logs, pid files) is
owner-only.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType

from fedcare.shared.errors import FedcareError

PRIVATE_UMASK = 0o077
STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.2
_MAX_PAUSE_SECONDS = 30.0
_HEALTHY_SECONDS = 60.0
"""A program that ran this long before it exited is started again without a pause."""


class ProgramFailed(FedcareError):
    """A supervised program exited, or did not become ready in time."""


def _always_ready() -> bool:
    return True


@dataclass(frozen=True)
class Program:
    """One program of a service.

    Attributes
    ----------
    name : str
        What messages call it.
    command : Sequence[str]
        Its command line (never a secret on it: every local user can read it).
    environment : Mapping[str, str]
        Its whole environment.
    ready : Callable[[], bool]
        Whether it is ready to serve (checked until true, or the timeout).
    ready_timeout : float
        Seconds it may take to become ready.
    restart : bool
        Start it again whenever it exits, instead of stopping the service.
    """

    name: str
    command: Sequence[str]
    environment: Mapping[str, str]
    ready: Callable[[], bool] = field(default=_always_ready)
    ready_timeout: float = 60.0
    restart: bool = False


StartHook = Callable[[Program, int], None]
"""Told each program and its process id whenever it is (re)started."""


@dataclass
class _Running:
    program: Program
    process: subprocess.Popen[bytes]
    started: float
    quick_exits: int = 0


class Supervisor:
    """Start programs, keep them running, and always stop them all.

    Use it as a context manager: leaving the block stops every program started.

    Parameters
    ----------
    on_start : StartHook | None
        Called whenever a program is (re)started.
    """

    def __init__(self, on_start: StartHook | None = None) -> None:
        self._running: list[_Running] = []
        self._stop = threading.Event()
        self._previous: dict[int, object] = {}
        self._on_start = on_start

    def __enter__(self) -> Supervisor:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._request_stop)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop_all()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _request_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether SIGINT or SIGTERM arrived."""
        return self._stop.is_set()

    def start(self, program: Program) -> None:
        """Start ``program`` and wait until it is ready (nothing, once a stop was asked).

        Raises
        ------
        ProgramFailed
            If it exits first, or is not ready within its timeout.
        """
        if self._stop.is_set():
            return
        entry = self._launch(program)
        self._running.append(entry)
        deadline = time.monotonic() + program.ready_timeout
        while not self._stop.is_set():
            if entry.process.poll() is not None:
                raise ProgramFailed(
                    f"{program.name} exited with code {entry.process.returncode} before it was "
                    "ready; its messages are above"
                )
            if program.ready():
                return
            if time.monotonic() > deadline:
                raise ProgramFailed(
                    f"{program.name} was not ready within {program.ready_timeout:.0f} s"
                )
            self._stop.wait(_POLL_SECONDS)

    def wait(self) -> int:
        """Block until a signal asks to stop (returns 0) or a program exits (returns 1).

        A program marked ``restart`` is started again instead; :meth:`failure` then
        says which program exited.
        """
        while not self._stop.wait(_POLL_SECONDS):
            for index, entry in enumerate(self._running):
                if entry.process.poll() is None:
                    continue
                if not entry.program.restart:
                    return 1
                if not self._restart(index, entry):
                    return 0
        return 0

    def failure(self) -> str | None:
        """Say which program has exited, if one has."""
        for entry in self._running:
            if entry.process.poll() is not None:
                return f"{entry.program.name} exited with code {entry.process.returncode}"
        return None

    def stop_all(self) -> None:
        """Stop every program started, newest first: SIGTERM, then SIGKILL after a grace period."""
        for entry in reversed(self._running):
            if entry.process.poll() is None:
                entry.process.terminate()
            try:
                entry.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                entry.process.kill()
                entry.process.wait()
        self._running.clear()

    def _launch(self, program: Program) -> _Running:
        process = subprocess.Popen(
            list(program.command), env=dict(program.environment), umask=PRIVATE_UMASK
        )
        if self._on_start is not None:
            self._on_start(program, process.pid)
        return _Running(program, process, time.monotonic())

    def _restart(self, index: int, entry: _Running) -> bool:
        """Start an exited program again after its pause; ``False`` if a stop came first."""
        quick = time.monotonic() - entry.started < _HEALTHY_SECONDS
        exits = entry.quick_exits + 1 if quick else 0
        pause = min(_MAX_PAUSE_SECONDS, 2.0**exits - 1)
        print(  # noqa: T201 - the service's own log line, beside its programs' output
            f"{entry.program.name} exited with code {entry.process.returncode}; "
            f"starting it again in {pause:.0f} s",
            flush=True,
        )
        if self._stop.wait(pause):
            return False
        self._running[index] = self._launch(entry.program)
        self._running[index].quick_exits = exits
        return True
