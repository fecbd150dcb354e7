"""A hospital's SuperNode: Flower's client, started with TLS and node authentication.

The hospital dials out to the aggregator (no inbound port is opened); its local
runtime API listens on loopback only.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

from fedcare.client.site_settings import SiteSettings

NODE_CONFIG_FILE = "node-config.toml"
CA_CERTIFICATE = "ca.crt"
NODE_KEY = "node.key"

SUPEREXEC_POLL_SECONDS = "0.1"
"""Flower's SuperExec checks for work every second by default; SecAgg+ has four
message exchanges per round, so a shorter poll trims seconds off every round."""


def node_config_toml(settings: SiteSettings) -> str:
    """The node config file Flower passes to the ClientApp (flat TOML)."""
    return tomli_w.dumps(settings.node.to_node_config())


def prepare_state(settings: SiteSettings) -> Path:
    """Create the hospital's state folder and write its node config; return that file."""
    state = settings.node.state
    (state / "flwr-home").mkdir(parents=True, exist_ok=True)
    path = state / NODE_CONFIG_FILE
    path.write_text(node_config_toml(settings), encoding="utf-8")
    return path


def supernode_command(settings: SiteSettings, executable: str, node_config: Path) -> list[str]:
    """The ``flower-supernode`` command line: TLS and authentication, never ``--insecure``."""
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
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.runtime_port),
    ]
