"""``fedcare aggregator start``: the SuperLink, its executor and the front, run as one service.

Start order, each checked before the next:

1. Flower's SuperLink on 127.0.0.1 (TLS, node authentication, process isolation
   with the runtime secret), ready when ``/health`` answers on loopback;
2. every node whose key the CA revoked is unregistered (the public port is not
   open yet, so a revoked hospital never gets in);
3. ``flower-superexec`` with the same runtime secret: it runs each run's ServerApp;
4. nginx on the public address, ready when a Fleet path reaches the SuperLink
   through it and a Control path does not.

If any of them exits, or the service gets SIGINT or SIGTERM, all are stopped.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from fedcare.server.fleet_front import (
    FRONT_DIR,
    FrontSettings,
    missing_modules,
    nginx_command,
    write_front,
)
from fedcare.server.node_registration import link_aggregator, unregister_revoked
from fedcare.server.superlink import LOOPBACK, AggregatorSettings
from fedcare.shared.certificate_checks import https_status, verify_server_certificate
from fedcare.shared.credentials import LOOPBACK_HOSTS, CredentialError
from fedcare.shared.errors import FedcareError
from fedcare.shared.flower_process import flower_environment, flower_executable
from fedcare.shared.supervision import Program, ProgramFailed, Supervisor

NGINX_INSTALL_HINT = "install it with `sudo apt-get install -y nginx-light` (Debian, Ubuntu)"
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_ANY_ADDRESS = {"0.0.0.0": LOOPBACK, "::": "[::1]"}
_UNREACHED = (None, 404, 502, 503, 504)
PROTOBUF = "application/protobuf"
"""Flower's HTTP APIs take protobuf bodies; an unsigned one is refused with 401."""


def nginx_executable() -> str:
    """Find nginx on ``PATH`` or in the system folders a user's ``PATH`` often lacks.

    Raises
    ------
    FedcareError
        If it is not installed.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    found = shutil.which("nginx", path=search)
    if found is None:
        raise FedcareError(f"nginx (the aggregator's front) is not installed; {NGINX_INSTALL_HINT}")
    return found


def check_certificate_covers_loopback(settings: AggregatorSettings) -> None:
    """Check the aggregator's certificate covers the loopback names its processes dial.

    Raises
    ------
    CredentialError
        Naming the certificate and how to re-issue it.
    """
    for host in LOOPBACK_HOSTS:
        try:
            verify_server_certificate(settings.tls.ca_certificate, settings.tls.certificate, host)
        except CredentialError as error:
            raise CredentialError(
                f"{error}. The aggregator's processes reach each other on {host}: re-issue "
                "the certificate with `fedcare ca server` (it now always covers loopback)"
            ) from None


def front_settings(settings: AggregatorSettings) -> FrontSettings:
    """Describe the front of ``settings``: public address, SuperLink behind it, files."""
    run_as = None
    if os.geteuid() == 0:
        # nginx's workers would otherwise switch to `nobody`; they run as the invoking user.
        run_as = (pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name)
    return FrontSettings(
        folder=settings.state / FRONT_DIR,
        listen_host=settings.host,
        listen_port=settings.port,
        superlink_port=settings.internal_port,
        certificate=settings.tls.certificate,
        key=settings.tls.key,
        ca_certificate=settings.tls.ca_certificate,
        run_as=run_as,
    )


def _public_dial(settings: AggregatorSettings) -> str:
    host = _ANY_ADDRESS.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{settings.port}"


def _front_ready(settings: AggregatorSettings) -> Callable[[], bool]:
    address, ca = _public_dial(settings), settings.tls.ca_certificate

    def ready() -> bool:
        fleet = https_status(address, "/v1/fleet/get-run", ca, method="POST", content_type=PROTOBUF)
        if fleet in _UNREACHED:
            return False
        control = https_status(address, "/v1/control/list-runs", ca, method="POST")
        if control != 404:
            raise ProgramFailed(
                f"the front at {address} lets a Control API request through (HTTP {control}); "
                "stopping: the public port must forward only the Fleet API"
            )
        return True

    return ready


def _programs(settings: AggregatorSettings) -> tuple[Program, Program, Program]:
    environment = flower_environment(settings.flwr_home)
    ca = settings.tls.ca_certificate
    superlink = Program(
        "the SuperLink",
        settings.superlink_command(flower_executable("flower-superlink")),
        environment,
        ready=lambda: https_status(settings.internal_address, "/health", ca) == 200,
    )
    executor = Program(
        "the ServerApp executor",
        settings.executor_command(flower_executable("flower-superexec")),
        environment,
    )
    nginx = nginx_executable()
    build = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    front = front_settings(settings)
    write_front(front, missing=missing_modules(build))
    return (
        superlink,
        executor,
        Program(
            "the front (nginx)",
            nginx_command(nginx, front),
            os.environ,
            ready=_front_ready(settings),
        ),
    )


def serve(settings: AggregatorSettings, ca_dir: Path, say: Callable[[str], None]) -> int:
    """Run the aggregator until a signal or a failure; return the exit code.

    Raises
    ------
    FedcareError
        If something is missing or wrong before any program starts.
    """
    check_certificate_covers_loopback(settings)
    settings.prepare()
    link_aggregator(ca_dir, settings.state)
    superlink, executor, front = _programs(settings)
    with Supervisor() as supervisor:
        try:
            supervisor.start(superlink)
            revoked = [] if supervisor.stopping else unregister_revoked(settings.state, ca_dir)
            for name in revoked:
                say(f"{name} was removed from the CA: unregistered before the front opened")
            supervisor.start(executor)
            supervisor.start(front)
        except FedcareError as error:
            say(f"could not start the aggregator: {error}")
            return 1
        if supervisor.stopping:
            return 0
        say(
            f"aggregator ready: hospitals connect to {settings.address} (public, Fleet API "
            f"only); operator commands reach the SuperLink on {settings.internal_address} "
            "(this host only)"
        )
        code = supervisor.wait()
        failure = supervisor.failure()
        if code and failure:
            say(f"{failure}; stopping the aggregator")
        return code
