"""A whole deployment on 127.0.0.1, as real processes: start, wait, and always stop.

Used by the deployment tests and the deployment benchmark. Every process starts in
its own session, so stopping it also stops the Flower processes it spawned
(SuperExec, ServerApp, ClientApps). Only loopback addresses are used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedcare.server.certificate_authority import CertificateAuthority
from fedcare.shared.config.data import DataSettings
from fedcare.shared.flower_process import port_open
from fedcare.shared.hospital_credentials import BUNDLE_FILE, NODE_PUBLIC_KEY, generate_node_key
from fedcare.simulations.hospital_files import DemoFiles, site_toml, write_demo_hospitals

ROOT = Path(__file__).resolve().parents[1]
DROPOUT_DEADLINE = 60
"""Seconds each exchange may take in a run where a hospital drops out or hangs: every
exchange it misses waits this long. Warm workers answer a healthy exchange in seconds,
but on a loaded 2-core machine 40 s once left a healthy hospital behind, and a round
late for everyone halts SecAgg+ for everyone."""
"""Working directory of every process started (the checkout, or the install prefix)."""


def free_port() -> int:
    """Return an ephemeral loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fedcare(*arguments: str) -> list[str]:
    """Return the command line of ``fedcare ARGUMENTS`` in this environment."""
    return [sys.executable, "-m", "fedcare", *arguments]


def fedcare_script() -> str:
    """Return the installed ``fedcare`` command beside this Python.

    Its own folder, not the working directory, is first on its ``sys.path``.
    """
    return str(Path(sys.executable).parent / "fedcare")


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail the test with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """The processes a test started; :meth:`stop_all` ends every one of them."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own session (in ``cwd``), logging to ``logs/<name>.log``."""
        log = open(self._logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            list(command),
            cwd=cwd or ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._started[name] = process
        return process

    def run(
        self,
        name: str,
        command: Sequence[str],
        *,
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> int:
        """Run ``command`` to completion (killed after ``timeout`` s) and return its exit code."""
        process = self.start(name, command, env)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(name)
            raise

    def log(self, name: str) -> str:
        """Return what process ``name`` has printed so far."""
        return (self._logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def exited(self, name: str) -> bool:
        """Whether process ``name`` has exited."""
        return self._started[name].poll() is not None

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


SiteHook = Callable[[str, dict[str, Any]], None]


@dataclass
class LocalFederation:
    """A CA, an aggregator and demo hospitals on 127.0.0.1 (see :func:`start_local_federation`).

    ``port`` is the aggregator's public port (its nginx front, Fleet API only);
    ``internal_port`` the SuperLink's own, which only the aggregator's processes and
    the operator's commands use.
    """

    root: Path
    processes: Processes
    port: int
    internal_port: int
    contract: Path

    @property
    def state(self) -> Path:
        """The aggregator's state folder."""
        return self.root / "aggregator"

    @property
    def ca(self) -> Path:
        """The federation's CA folder."""
        return self.root / "ca"

    def site(self, name: str) -> Path:
        """Hospital ``name``'s ``site.toml``."""
        return self.root / name / "site.toml"

    def credentials(self, name: str) -> Path:
        """Hospital ``name``'s own credentials folder (its key pair and the operator's files)."""
        return self.root / name / "credentials"

    def start_aggregator(self, name: str) -> None:
        """Start (or restart, on the same state and ports) the aggregator as process ``name``."""
        command = fedcare(
            "aggregator",
            "start",
            "--state",
            str(self.state),
            "--ca",
            str(self.ca),
            "--port",
            str(self.port),
            "--internal-port",
            str(self.internal_port),
        )
        self.processes.start(name, command)
        # The front opens last, once the SuperLink and its executor are ready.
        wait_for(lambda: port_open(self.port), timeout=90, what="the aggregator's front to listen")

    def enrol_hospital(self, name: str, credentials: Path) -> None:
        """Enrol hospital ``name`` as a real one would: own key, operator records it, registers.

        The hospital makes its key pair in ``credentials`` (unless it already has
        one); the operator records ``node.pub`` in the CA and sends back ``ca.crt``
        and ``bundle.toml``, which land next to the key; then the operator
        registers it at the running aggregator (``fedcare aggregator register``).
        The first two steps run in this process: their commands are tested on
        their own, and each ``fedcare`` start costs seconds.
        """
        if not (credentials / NODE_PUBLIC_KEY).exists():
            generate_node_key(credentials)
        bundle = CertificateAuthority.load(self.ca).add_hospital(
            name,
            aggregator_address=f"127.0.0.1:{self.port}",
            public_key=credentials / NODE_PUBLIC_KEY,
        )
        for returned in (bundle.ca_certificate, bundle.folder / BUNDLE_FILE):
            shutil.copyfile(returned, credentials / returned.name)
        register = fedcare(
            "aggregator", "register", name, "--state", str(self.state), "--ca", str(self.ca)
        )
        _expect_success(self.processes, f"register-{name}", register)

    def train_replies(self, hospital: str) -> int:
        """How many training replies ``hospital`` has logged (SecAgg+ sends several a round)."""
        return self.processes.log(hospital).count("Sending: train message")

    def start_hospital(self, name: str, cwd: Path | None = None) -> None:
        """Start (or restart) hospital ``name`` with the ``fedcare`` command, as its IT would."""
        command = [fedcare_script(), "hospital", "start", "--config", str(self.site(name))]
        # Three hospitals and an aggregator share this machine's cores: one thread each.
        self.processes.start(name, command, env={"OMP_NUM_THREADS": "1"}, cwd=cwd)

    def worker_pid(self, name: str) -> int | None:
        """Return the process id of hospital ``name``'s worker (``None`` before it started)."""
        path = self.root / name / "state" / "worker.pid"
        return int(path.read_text()) if path.is_file() else None

    def start_run(
        self, name: str, *, rounds: int, timeout: int, hospitals: int = 3, extra: Sequence[str] = ()
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Submit a run with ``fedcare run``; return its process and run folder."""
        out = self.root / name
        command = fedcare(
            "run",
            "--state",
            str(self.state),
            "--contract",
            str(self.contract),
            "--hospitals",
            str(hospitals),
            "--rounds",
            str(rounds),
            "--out",
            str(out),
            "--set",
            f"round-timeout={timeout}",
            *extra,
        )
        return self.processes.start(name, command), out


def start_local_federation(
    root: Path,
    processes: Processes,
    *,
    customize_site: SiteHook | None = None,
    prepare_data: Callable[[DemoFiles], None] | None = None,
) -> LocalFederation:
    """Create a CA, start an aggregator (front, SuperLink, executor) and three demo hospitals.

    Each hospital makes its own key pair; only its public key reaches the CA
    (:meth:`LocalFederation.enrol_hospital`).

    ``prepare_data`` may edit the hospitals' files before they start, and
    ``customize_site`` each ``site.toml`` (as a dict) before it is written.
    """
    files = write_demo_hospitals(root / "data", DataSettings())
    if prepare_data is not None:
        prepare_data(files)
    federation = LocalFederation(
        root=root,
        processes=processes,
        port=free_port(),
        internal_port=free_port(),
        contract=files.contract,
    )
    _expect_success(
        processes, "ca-init", fedcare("ca", "init", "--dir", str(federation.ca), "--name", "local")
    )
    _expect_success(
        processes,
        "ca-server",
        fedcare("ca", "server", "--dir", str(federation.ca), "--host", "127.0.0.1"),
    )
    federation.start_aggregator("aggregator")
    for name, data in sorted(files.hospitals.items()):
        site = site_toml(
            name=name,
            aggregator=f"127.0.0.1:{federation.port}",
            credentials=federation.credentials(name),
            data=data,
            contract=files.contract,
            runtime_port=free_port(),
        )
        site["hospital"] |= {"device": "cpu", "state": str(root / name / "state")}
        if customize_site is not None:
            customize_site(name, site)
        federation.site(name).parent.mkdir(parents=True, exist_ok=True)
        federation.site(name).write_text(tomli_w.dumps(site), encoding="utf-8")
        federation.enrol_hospital(name, federation.credentials(name))
        federation.start_hospital(name)
    return federation


def _expect_success(processes: Processes, name: str, command: list[str]) -> None:
    if processes.run(name, command, timeout=120) != 0:
        raise RuntimeError(f"'{name}' failed:\n{processes.log(name)[-2000:]}")
