"""The aggregator's SuperLink: Flower's server, started with TLS and node authentication.

fedcare keeps everything of one aggregator under one state folder::

    state/
      superlink.db      Flower's persistent state (runs, registered hospitals)
      flwr-home/        Flower's home: the operator's connection to this SuperLink
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedcare.shared.errors import ConfigError

CONNECTION = "fedcare"
"""Name of the operator's connection in ``flwr-home/config.toml``."""

SERVER_CERTIFICATE = "server.pem"
SERVER_KEY = "server.key"
CA_CERTIFICATE = "ca.crt"


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
        tls = cls(folder / CA_CERTIFICATE, folder / SERVER_CERTIFICATE, folder / SERVER_KEY)
        for path in (tls.ca_certificate, tls.certificate, tls.key):
            if not path.is_file():
                raise ConfigError(
                    "--tls", f"{path} is missing; create it with `fedcare ca server --host HOST`"
                )
        return tls


@dataclass(frozen=True)
class AggregatorSettings:
    """Where and how the SuperLink runs.

    Attributes
    ----------
    state : Path
        The aggregator's state folder.
    host, port : str, int
        Where hospitals (and the operator) connect.
    tls : ServerTls | None
        ``None`` only with an explicit ``--insecure-dev``: no TLS, no node authentication.
    """

    state: Path
    host: str
    port: int
    tls: ServerTls | None

    @property
    def address(self) -> str:
        """``host:port`` hospitals dial."""
        return f"{self.host}:{self.port}"

    @property
    def flwr_home(self) -> Path:
        """Flower's home folder for this aggregator."""
        return flwr_home(self.state)

    def command(self, executable: str) -> list[str]:
        """Return the ``flower-superlink`` command line."""
        command = [
            executable,
            "--database",
            str((self.state / "superlink.db").resolve()),
            "--disable-runtime-dependency-installation",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.tls is None:
            return [*command, "--insecure"]
        return [
            *command,
            "--ssl-ca-certfile",
            str(self.tls.ca_certificate.resolve()),
            "--ssl-certfile",
            str(self.tls.certificate.resolve()),
            "--ssl-keyfile",
            str(self.tls.key.resolve()),
            "--enable-supernode-auth",
        ]

    def connection_toml(self) -> str:
        """Return the operator's ``flwr-home/config.toml``, pointing Flower's CLI here."""
        dial = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "{dial}:{self.port}"',
        ]
        if self.tls is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.tls.ca_certificate.resolve()}"')
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        """Create the state folder and write the operator's connection file."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(self.connection_toml(), encoding="utf-8")


class HospitalRegistry:
    """Which node id belongs to which hospital, as registered at this aggregator.

    Flower knows nodes by id; this file (``state/hospitals.json``) lets the report
    name a hospital even when it dropped out before its first reply.
    """

    def __init__(self, state: Path) -> None:
        self.path = state / "hospitals.json"

    def load(self) -> dict[int, str]:
        """Node id to hospital name (empty before the first registration)."""
        if not self.path.exists():
            return {}
        return {
            int(node): str(name)
            for node, name in json.loads(self.path.read_text(encoding="utf-8")).items()
        }

    def add(self, node_id: int, name: str) -> None:
        """Record that ``node_id`` is hospital ``name``."""
        names = self.load() | {node_id: name}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({str(k): v for k, v in names.items()}, indent=2) + "\n", encoding="utf-8"
        )

    def as_setting(self) -> str:
        """Return the ``hospital-names`` run-config value."""
        return ",".join(f"{node}={name}" for node, name in sorted(self.load().items()))
