"""Start Flower's own programs (SuperLink, SuperNode, ``flwr``) from this environment.

fedcare never replaces Flower's deployment engine; it builds safe command lines
for it and runs them in the foreground, passing signals through so that Ctrl-C
or a service manager's SIGTERM stops Flower cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from fedcare.shared.errors import FedcareError

FLOWER_ENVIRONMENT = {
    # Otherwise `flwr run` installs the app's dependencies (a multi-GB CUDA torch) per run.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}


def flower_executable(name: str) -> str:
    """Path of Flower program ``name`` installed beside this Python.

    Raises
    ------
    FedcareError
        If it is not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FedcareError(f"'{name}' is not installed; install fedcare (it pins flwr 1.41.0)")
    return found


def flower_environment(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment plus Flower's home and fedcare's safe defaults.

    This Python's folder goes first on ``PATH``: Flower starts its helpers
    (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``) by name, and
    they must come from the same installation, activated or not.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **os.environ,
        **FLOWER_ENVIRONMENT,
        "FLWR_HOME": str(flwr_home),
        "PATH": path,
        **(extra or {}),
    }


def run_foreground(command: Sequence[str], environment: Mapping[str, str]) -> int:
    """Run ``command`` until it exits, forwarding SIGINT and SIGTERM to it.

    Returns
    -------
    int
        Its exit code.
    """
    process = subprocess.Popen(list(command), env=dict(environment))
    with _forwarded_signals(process):
        return process.wait()


def run_streaming(
    command: Sequence[str], environment: Mapping[str, str], on_line: Callable[[str], None]
) -> int:
    """Run ``command`` until it exits, handing each line of its output to ``on_line``.

    Standard error is merged into standard output, in order; SIGINT and SIGTERM
    are forwarded to the command.

    Returns
    -------
    int
        Its exit code.
    """
    process = subprocess.Popen(
        list(command),
        env=dict(environment),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    with _forwarded_signals(process):
        for line in process.stdout or ():
            on_line(line.rstrip("\n"))
        return process.wait()


@contextmanager
def _forwarded_signals(process: subprocess.Popen[Any]) -> Iterator[None]:
    def forward(signum: int, _frame: FrameType | None) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` (a program is ready)."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
