"""A hospital's two programs: Flower's SuperNode and fedcare's worker beside it.

The SuperNode dials out to the aggregator (no inbound port is opened), with TLS
and node authentication, and serves its runtime API on loopback only. It runs in
Flower's *process* isolation, so it starts no program of its own for a message;
only a holder of the runtime secret (``<state>/runtime.secret``, random bytes,
owner-only) may take its tasks, and fedcare's worker (:mod:`client.executor`) is
that holder. Neither the secret nor any task token ever appears on a command line.

Everything in the state folder is owner-only: the folder and Flower's home 0700,
the node config, runtime secret, privacy ledger and audit log 0600, also when they
existed before with wider permissions.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import tomli_w

from fedcare.client.site_settings import SiteSettings
from fedcare.client.state_files import FLWR_HOME, NODE_CONFIG_FILE, PRIVATE_FILES, RUNTIME_SECRET
from fedcare.shared.credentials import CA_CERTIFICATE
from fedcare.shared.hospital_credentials import NODE_KEY
from fedcare.shared.private_files import private_directory, restrict_file, write_private

_SECRET_BYTES = 32


def node_config_toml(settings: SiteSettings) -> str:
    """Render the node config file Flower passes to the ClientApp (flat TOML)."""
    return tomli_w.dumps(settings.node.to_node_config())


def prepare_state(settings: SiteSettings) -> Path:
    """Create (or tighten) the owner-only state folder, its node config and runtime secret.

    Returns
    -------
    Path
        The node config file.
    """
    state = private_directory(settings.node.state)
    home = private_directory(state / FLWR_HOME)
    for path in home.rglob("*"):
        if path.is_dir():
            private_directory(path)
        else:
            restrict_file(path)
    for name in PRIVATE_FILES:
        restrict_file(state / name)
    secret = state / RUNTIME_SECRET
    if not secret.is_file() or not secret.read_bytes():
        write_private(secret, secrets.token_bytes(_SECRET_BYTES))
    restrict_file(secret)
    path = state / NODE_CONFIG_FILE
    write_private(path, node_config_toml(settings).encode("utf-8"))
    return path


def supernode_command(settings: SiteSettings, executable: str, node_config: Path) -> list[str]:
    """Build ``flower-supernode``'s command line: TLS, authentication, process isolation."""
    return [
        executable,
        "--superlink",
        settings.aggregator,
        "--root-certificates",
        str((settings.credentials / CA_CERTIFICATE).resolve()),
        "--auth-supernode-private-key",
        str((settings.credentials / NODE_KEY).resolve()),
        "--node-config",
        str(node_config.resolve()),
        "--isolation",
        "process",
        "--superexec-auth-secret-file",
        str((settings.node.state / RUNTIME_SECRET).resolve()),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.runtime_port),
    ]


def worker_command(settings: SiteSettings) -> list[str]:
    """Build the worker's command line: isolated mode, the working directory never imported."""
    return [
        sys.executable,
        "-I",
        "-m",
        "fedcare.client.executor",
        "--config",
        str(settings.source.resolve()),
    ]
