"""The aggregator's public front: nginx terminates TLS and forwards only the Fleet API.

Open-source Flower 1.41 serves the Fleet API (hospitals), the Control API
(``flwr run``, ``flwr supernode register``...) and the Runtime API (the ServerApp's
executor) on one port, and authenticates only the Fleet API. So the SuperLink
listens on 127.0.0.1 and nginx is the only public listener: it forwards exactly the
twelve Fleet paths a SuperNode calls, POST only, to the SuperLink over TLS
(verified against the federation's CA); every other path (Control, Runtime,
``/docs``, ``/openapi.json``, ``/health``) gets a 404 from nginx and never reaches
Flower. Node authentication is a signature in request headers, which nginx passes
through unchanged.

nginx runs in the foreground (``daemon off``) as the invoking user; its pid file,
logs and temporary folders are all in the front's folder of the aggregator's state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedcare.shared.private_files import private_directory, write_private

FLEET_PATHS = (
    "/v1/fleet/register-node",
    "/v1/fleet/activate-node",
    "/v1/fleet/deactivate-node",
    "/v1/fleet/unregister-node",
    "/v1/fleet/send-node-heartbeat",
    "/v1/fleet/pull-messages",
    "/v1/fleet/push-messages",
    "/v1/fleet/get-run",
    "/v1/fleet/get-fab",
    "/v1/fleet/push-object",
    "/v1/fleet/pull-object",
    "/v1/fleet/confirm-message-received",
)
"""Every path Flower 1.41's SuperNode calls (``supernode/fleet_http_client.py``); nothing else."""

FRONT_DIR = "front"
CONFIG_FILE = "nginx.conf"
ACCESS_LOG = "access.log"
MAX_BODY = "64m"
"""Flower sends model objects in chunks of at most 5 MB and app bundles of at most 10 MB."""

_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# An nginx built without one of these modules does not know its *_temp_path directive.
_WITHOUT_MODULE = re.compile(r"--without-http_(fastcgi|uwsgi|scgi)_module")


@dataclass(frozen=True)
class FrontSettings:
    """What the front's nginx configuration depends on.

    Attributes
    ----------
    folder : Path
        The front's folder in the aggregator's state (config, pid, logs, temp files).
    listen_host, listen_port : str, int
        The public address.
    superlink_port : int
        The SuperLink's port on 127.0.0.1.
    certificate, key, ca_certificate : Path
        The aggregator's certificate and key (presented to hospitals) and the
        federation's CA (to verify the SuperLink behind the front).
    run_as : tuple[str, str] | None
        User and group for nginx's workers when started as root (they would
        otherwise switch to ``nobody``); ``None`` otherwise.
    """

    folder: Path
    listen_host: str
    listen_port: int
    superlink_port: int
    certificate: Path
    key: Path
    ca_certificate: Path
    run_as: tuple[str, str] | None = None

    @property
    def config_path(self) -> Path:
        """Where the generated ``nginx.conf`` goes."""
        return self.folder / CONFIG_FILE


def missing_modules(nginx_build: str) -> frozenset[str]:
    """List the optional nginx modules a build left out, from ``nginx -V``'s output."""
    return frozenset(_WITHOUT_MODULE.findall(nginx_build))


def _quoted(path: Path) -> str:
    # nginx takes double-quoted strings with backslash escapes.
    text = str(path.resolve())
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _main_context(front: FrontSettings) -> list[str]:
    lines = []
    if front.run_as is not None:
        lines.append(f"user {front.run_as[0]} {front.run_as[1]};")
    return [
        *lines,
        "daemon off;",
        "worker_processes 1;",
        f"pid {_quoted(front.folder / 'nginx.pid')};",
        "error_log stderr;",
        "events { worker_connections 512; }",
    ]


def _temp_paths(front: FrontSettings, missing: frozenset[str]) -> list[str]:
    return [
        f"{kind}_temp_path {_quoted(front.folder / 'tmp' / kind)};"
        for kind in _TEMP_PATHS
        if kind not in missing
    ]


def _fleet_location(path: str) -> list[str]:
    # An exact match, and the canonical path sent upstream whatever the client wrote.
    return [
        f"location = {path} {{",
        "    limit_except POST { deny all; }",
        f"    proxy_pass https://superlink{path};",
        "}",
    ]


def _server(front: FrontSettings) -> list[str]:
    lines = [
        f"listen {_listen(front.listen_host, front.listen_port)} ssl;",
        f"ssl_certificate {_quoted(front.certificate)};",
        f"ssl_certificate_key {_quoted(front.key)};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        f"client_max_body_size {MAX_BODY};",
        # Bodies stream through: updates are never written to the front's disk.
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_ssl_verify on;",
        f"proxy_ssl_trusted_certificate {_quoted(front.ca_certificate)};",
        # nginx matches the upstream certificate by DNS name; every aggregator
        # certificate covers localhost (see fedcare ca server).
        "proxy_ssl_name localhost;",
        "proxy_ssl_protocols TLSv1.2 TLSv1.3;",
    ]
    for path in FLEET_PATHS:
        lines += _fleet_location(path)
    lines += ["location / { return 404; }"]
    return lines


def nginx_config(front: FrontSettings, *, missing: frozenset[str] = frozenset()) -> str:
    """Write out the front's ``nginx.conf``: TLS, and only :data:`FLEET_PATHS` forwarded.

    Parameters
    ----------
    front : FrontSettings
        Addresses and files.
    missing : frozenset[str]
        Optional modules this nginx was built without (:func:`missing_modules`).
    """
    http = [
        f"access_log {_quoted(front.folder / ACCESS_LOG)};",
        *_temp_paths(front, missing),
        "server_tokens off;",
        f"upstream superlink {{ server 127.0.0.1:{front.superlink_port}; keepalive 16; }}",
        "server {",
        *(f"    {line}" for line in _server(front)),
        "}",
    ]
    lines = [
        "# Written by `fedcare aggregator start` at every start; edits are overwritten.",
        *_main_context(front),
        "http {",
        *(f"    {line}" for line in http),
        "}",
    ]
    return "\n".join(lines) + "\n"


def write_front(front: FrontSettings, *, missing: frozenset[str] = frozenset()) -> Path:
    """Create the front's folders (0700) and write its config (0600); return the config's path."""
    private_directory(front.folder)
    private_directory(front.folder / "tmp")
    write_private(front.config_path, nginx_config(front, missing=missing).encode())
    return front.config_path


def nginx_command(executable: str, front: FrontSettings) -> list[str]:
    """Run nginx in the foreground on the front's config, logging errors to stderr."""
    return [
        executable,
        "-p",
        str(front.folder.resolve()),
        "-c",
        str(front.config_path.resolve()),
        "-e",
        "stderr",
    ]
