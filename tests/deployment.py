"""Real processes on 127.0.0.1 for deployment tests: start, wait, and always stop.

Every process starts in its own session, so stopping it also stops the Flower
processes it spawned (SuperExec, ServerApp, ClientApps).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fedcare(*arguments: str) -> list[str]:
    """The command line of ``fedcare ARGUMENTS`` in this environment."""
    return [sys.executable, "-m", "fedcare", *arguments]


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """The processes a test started; :meth:`stop_all` ends every one of them."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own session, logging to ``logs/<name>.log``."""
        log = open(self._logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            list(command), cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._started[name] = process
        return process

    def run(self, name: str, command: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> int:
        """Run ``command`` to completion (killed after ``timeout`` s) and return its exit code."""
        process = self.start(name, command, env)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(name)
            raise

    def log(self, name: str) -> str:
        """What process ``name`` has printed so far."""
        return (self._logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL process ``name`` and everything it spawned (a crash, not a shutdown)."""
        self._signal(name, signal.SIGKILL)

    def stop(self, name: str) -> None:
        """Stop process ``name`` and its children: SIGTERM, then SIGKILL after 10 s."""
        process = self._started[name]
        self._signal(name, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._signal(name, signal.SIGKILL)
            process.wait(timeout=10)

    def stop_all(self) -> None:
        """Stop every process started, newest first."""
        for name in reversed(list(self._started)):
            self.stop(name)

    def _signal(self, name: str, signum: int) -> None:
        try:
            os.killpg(self._started[name].pid, signum)
        except ProcessLookupError:
            pass
