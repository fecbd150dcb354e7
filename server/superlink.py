"""The aggregator's SuperLink: Flower's server on loopback, with TLS, node auth and an executor.

Flower 1.41 serves the Fleet API (hospitals), the Control API (operator commands)
and the Runtime API (the ServerApp's executor) on one port, and authenticates only
the Fleet API. fedcare therefore binds the SuperLink to ``127.0.0.1`` (the
*internal* port) and lets hospitals in through a front that forwards only the Fleet
API (:mod:`server.fleet_front`, the *public* port). The SuperLink runs with
``--isolation process`` and a runtime secret, so only fedcare's own executor
(``flower-superexec`` holding the same secret) may take a run's ServerApp task.

fedcare keeps everything of one aggregator under one state folder (0700; every
file in it 0600, also when the folder already existed)::

    state/
      superlink.db      Flower's persistent state (runs, registered hospitals)
      runtime.secret    the runtime secret shared by the SuperLink and its executor
      hospitals.json    which node id is which hospital (the registry)
      flwr-home/        Flower's home: the operator's connection to the internal port
      front/            the front's nginx.conf, pid file, access log and temp files
"""

from __future__ import annotations

import json
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedcare.shared.credentials import CA_CERTIFICATE
from fedcare.shared.errors import ConfigError
from fedcare.shared.private_files import (
    private_directory,
    restrict_file,
    write_private,
)

CONNECTION = "fedcare"
"""Name of the operator's connection in ``flwr-home/config.toml``."""

SERVER_CERTIFICATE = "server.pem"
SERVER_KEY = "server.key"
DATABASE = "superlink.db"
RUNTIME_SECRET = "runtime.secret"
REGISTRY = "hospitals.json"
LOOPBACK = "127.0.0.1"


def flwr_home(state: Path) -> Path:
    """Flower's home folder (the operator's connection) inside an aggregator's state folder."""
    return state / "flwr-home"


@dataclass(frozen=True)
class ServerTls:
    """The aggregator's TLS files (``fedcare ca server`` writes them)."""

    ca_certificate: Path
    certificate: Path
    key: Path

    @classmethod
    def from_folder(cls, folder: Path) -> ServerTls:
        """Find ``ca.crt``, ``server.pem`` and ``server.key`` in ``folder``.

        Raises
        ------
        ConfigError
            Naming the missing file and how to create it.
        """
        tls = cls(
            (folder / CA_CERTIFICATE).resolve(),
            (folder / SERVER_CERTIFICATE).resolve(),
            (folder / SERVER_KEY).resolve(),
        )
        for path in (tls.ca_certificate, tls.certificate, tls.key):
            if not path.is_file():
                raise ConfigError(
                    "--ca", f"{path} is missing; create it with `fedcare ca server --host HOST`"
                )
        return tls


@dataclass(frozen=True)
class AggregatorSettings:
    """Where and how the aggregator's processes run.

    Attributes
    ----------
    state : Path
        The aggregator's state folder.
    host, port : str, int
        The public address: the front listens there, hospitals dial it.
    internal_port : int
        The SuperLink's port on 127.0.0.1: the front, the executor and the
        operator's commands use it; it must never be reachable from outside.
    tls : ServerTls
        The aggregator's certificate, key and the federation's CA certificate.
    """

    state: Path
    host: str
    port: int
    internal_port: int
    tls: ServerTls

    def __post_init__(self) -> None:
        if self.port == self.internal_port:
            raise ConfigError(
                "--internal-port", "must differ from --port (the public port is the front's)"
            )

    @property
    def address(self) -> str:
        """The public ``host:port`` hospitals dial."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def internal_address(self) -> str:
        """``127.0.0.1:PORT`` of the SuperLink itself."""
        return f"{LOOPBACK}:{self.internal_port}"

    @property
    def flwr_home(self) -> Path:
        """Flower's home folder for this aggregator."""
        return flwr_home(self.state)

    @property
    def runtime_secret(self) -> Path:
        """The secret the SuperLink requires of whoever takes a ServerApp task."""
        return self.state / RUNTIME_SECRET

    def superlink_command(self, executable: str) -> list[str]:
        """Return the ``flower-superlink`` command: loopback only, TLS, node auth, process mode."""
        return [
            executable,
            "--database",
            str((self.state / DATABASE).resolve()),
            "--disable-runtime-dependency-installation",
            "--host",
            LOOPBACK,
            "--port",
            str(self.internal_port),
            "--ssl-ca-certfile",
            str(self.tls.ca_certificate),
            "--ssl-certfile",
            str(self.tls.certificate),
            "--ssl-keyfile",
            str(self.tls.key),
            "--enable-supernode-auth",
            # The SuperLink honours the runtime secret only in process isolation; an
            # executor fedcare starts (below) then runs the ServerApps.
            "--isolation",
            "process",
            "--superexec-auth-secret-file",
            str(self.runtime_secret.resolve()),
        ]

    def executor_command(self, executable: str) -> list[str]:
        """Return the ``flower-superexec`` command that runs each run's ServerApp."""
        return [
            executable,
            "--runtime-api-address",
            self.internal_address,
            "--root-certificates",
            str(self.tls.ca_certificate),
            "--superexec-auth-secret-file",
            str(self.runtime_secret.resolve()),
        ]

    def connection_toml(self) -> str:
        """Return the operator's ``flwr-home/config.toml``: Flower's CLI uses the internal port."""
        return (
            "[superlink]\n"
            f'default = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f'address = "{self.internal_address}"\n'
            f'root-certificates = "{self.tls.ca_certificate}"\n'
        )

    def prepare(self) -> None:
        """Create (or tighten) the state folder, the runtime secret and the connection file."""
        private_directory(self.state)
        private_directory(self.flwr_home)
        if not self.runtime_secret.is_file():
            write_private(self.runtime_secret, secrets.token_bytes(32))
        write_private(self.flwr_home / "config.toml", self.connection_toml().encode())
        for name in (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", RUNTIME_SECRET, REGISTRY):
            restrict_file(self.state / name)


def internal_connection(state: Path) -> tuple[str, Path]:
    """Read the SuperLink's loopback address and CA certificate from the operator's connection.

    Raises
    ------
    ConfigError
        If the aggregator has never been started with this state folder.
    """
    path = flwr_home(state) / "config.toml"
    try:
        connection = tomllib.loads(path.read_text(encoding="utf-8"))["superlink"][CONNECTION]
        return str(connection["address"]), Path(connection["root-certificates"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        raise ConfigError(
            "--state", f"{state} is not an aggregator's state folder (start it once first)"
        ) from None


@dataclass(frozen=True)
class RegisteredHospital:
    """A node registered at this aggregator: its hospital name and key fingerprint."""

    name: str
    fingerprint: str


class HospitalRegistry:
    """Which node id belongs to which hospital, as registered at this aggregator.

    Flower knows nodes only by id and authenticates them by key; this file
    (``state/hospitals.json``, 0600) is the aggregator's only source of hospital
    names. A reply that names a hospital is never believed.
    """

    def __init__(self, state: Path) -> None:
        self.path = state / REGISTRY

    def load(self) -> dict[int, RegisteredHospital]:
        """Node id to hospital (empty before the first registration)."""
        if not self.path.exists():
            return {}
        entries = json.loads(self.path.read_text(encoding="utf-8"))
        return {int(node): _entry(value) for node, value in entries.items()}

    def node_of(self, name: str) -> int | None:
        """Return the node id hospital ``name`` is registered as, if it is."""
        return next((node for node, h in self.load().items() if h.name == name), None)

    def add(self, node_id: int, hospital: RegisteredHospital) -> None:
        """Record that ``node_id`` is ``hospital``."""
        self._save(self.load() | {node_id: hospital})

    def remove(self, node_id: int) -> None:
        """Forget ``node_id`` (it was unregistered at the SuperLink)."""
        self._save({k: v for k, v in self.load().items() if k != node_id})

    def as_setting(self) -> str:
        """Return the ``hospital-names`` run-config value."""
        return ",".join(f"{node}={h.name}" for node, h in sorted(self.load().items()))

    def _save(self, entries: dict[int, RegisteredHospital]) -> None:
        private_directory(self.path.parent)
        content = {
            str(k): {"name": v.name, "fingerprint": v.fingerprint} for k, v in entries.items()
        }
        write_private(self.path, (json.dumps(content, indent=2) + "\n").encode())


def _entry(value: object) -> RegisteredHospital:
    # Registries written before fingerprints were kept hold the bare name.
    if isinstance(value, str):
        return RegisteredHospital(value, "")
    if isinstance(value, dict):
        return RegisteredHospital(str(value["name"]), str(value.get("fingerprint", "")))
    raise ValueError(f"unexpected registry entry {value!r:.60}")
