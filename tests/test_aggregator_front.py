"""The aggregator's front and state, without starting it: nginx config, files, revocations."""

from __future__ import annotations

import inspect
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fedcare.server.aggregator_service import front_settings
from fedcare.server.ca_registry import HospitalRecord
from fedcare.server.certificate_authority import init_ca
from fedcare.server.fleet_front import (
    FLEET_PATHS,
    FrontSettings,
    missing_modules,
    nginx_command,
    nginx_config,
    write_front,
)
from fedcare.server.node_registration import (
    ControlError,
    link_aggregator,
    linked_aggregator,
    revoked_nodes,
    unregister_revoked,
)
from fedcare.server.superlink import (
    AggregatorSettings,
    HospitalRegistry,
    RegisteredHospital,
    ServerTls,
)
from fedcare.shared.errors import ConfigError
from fedcare.shared.hospital_credentials import generate_node_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def settings(tmp_path: Path) -> AggregatorSettings:
    ca = init_ca(tmp_path / "ca", name="Front")
    issued = ca.issue_server_certificate(["aggregator.example.org"])
    return AggregatorSettings(
        state=tmp_path / "state",
        host="0.0.0.0",
        port=8443,
        internal_port=19093,
        tls=ServerTls.from_folder(issued.folder),
    )


def _front(tmp_path: Path, **changes: object) -> FrontSettings:
    values: dict[str, object] = {
        "folder": tmp_path / "front",
        "listen_host": "0.0.0.0",
        "listen_port": 8443,
        "superlink_port": 19093,
        "certificate": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "ca_certificate": tmp_path / "ca.crt",
    }
    return FrontSettings(**(values | changes))  # type: ignore[arg-type]


# --- the nginx configuration ---------------------------------------------------


def test_fleet_paths_are_exactly_what_flowers_supernode_calls() -> None:
    from flwr.supernode.fleet_http_client import FleetHttpClient

    called = re.findall(r'path="(/v1/fleet/[a-z-]+)"', inspect.getsource(FleetHttpClient))
    assert sorted(FLEET_PATHS) == sorted(called) and len(FLEET_PATHS) == 12


def test_the_front_forwards_only_the_fleet_paths_post_only_over_verified_tls(
    tmp_path: Path,
) -> None:
    config = nginx_config(_front(tmp_path))
    locations = re.findall(r"location (= )?(\S+) \{", config)
    assert [path for exact, path in locations if exact] == list(FLEET_PATHS)
    assert [path for exact, path in locations if not exact] == ["/"]
    assert "location / { return 404; }" in config
    flat = " ".join(config.split())
    for path in FLEET_PATHS:
        # POST only; the canonical path goes upstream, whatever spelling the client used.
        block = f"location = {path} {{ limit_except POST {{ deny all; }} "
        assert block + f"proxy_pass https://superlink{path}; }}" in flat
    assert config.count("proxy_pass") == 12
    assert "upstream superlink { server 127.0.0.1:19093; keepalive 16; }" in config
    assert "proxy_ssl_verify on;" in config and "proxy_ssl_name localhost;" in config
    assert f'proxy_ssl_trusted_certificate "{(tmp_path / "ca.crt").resolve()}";' in config
    assert "listen 0.0.0.0:8443 ssl;" in config
    assert f'ssl_certificate_key "{(tmp_path / "server.key").resolve()}";' in config
    for line in ("daemon off;", "error_log stderr;", "server_tokens off;"):
        assert line in config
    assert "proxy_request_buffering off;" in config and "proxy_buffering off;" in config


def test_everything_nginx_writes_stays_in_the_front_folder(tmp_path: Path) -> None:
    front = _front(tmp_path)
    config = nginx_config(front)
    written = re.findall(r'(?:pid|access_log|_temp_path) "([^"]+)"', config)
    assert len(written) == 7
    assert all(Path(path).is_relative_to(front.folder.resolve()) for path in written)
    assert "user " not in config
    as_root = nginx_config(_front(tmp_path, run_as=("alice", "staff")))
    assert as_root.splitlines()[1] == "user alice staff;"


def test_temp_paths_of_modules_a_build_lacks_are_left_out(tmp_path: Path) -> None:
    build = "configure arguments: --with-http_ssl_module --without-http_uwsgi_module "
    build += "--without-http_scgi_module"
    assert missing_modules(build) == {"uwsgi", "scgi"}
    config = nginx_config(_front(tmp_path), missing=missing_modules(build))
    assert "uwsgi_temp_path" not in config and "scgi_temp_path" not in config
    assert "fastcgi_temp_path" in config and "proxy_temp_path" in config


def test_ipv6_and_odd_paths_are_written_safely(tmp_path: Path) -> None:
    odd = tmp_path / 'we"ird dir'
    config = nginx_config(_front(tmp_path, listen_host="::", folder=odd))
    assert "listen [::]:8443 ssl;" in config
    assert 'we\\"ird dir' in config


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="no nginx")
def test_nginx_accepts_the_generated_config(settings: AggregatorSettings) -> None:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx is not None
    settings.prepare()
    front = front_settings(settings)
    build = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    path = write_front(front, missing=missing_modules(build))
    assert _mode(path) == 0o600 and _mode(front.folder) == 0o700
    test = subprocess.run(
        [*nginx_command(nginx, front), "-t"], capture_output=True, text=True, check=False
    )
    assert test.returncode == 0, test.stderr
    assert "test is successful" in test.stderr


# --- the aggregator's state ----------------------------------------------------------


def test_state_is_owner_only_also_when_it_already_existed(settings: AggregatorSettings) -> None:
    settings.state.mkdir(mode=0o755)
    for name in ("superlink.db", "hospitals.json"):
        (settings.state / name).write_text("{}")
        (settings.state / name).chmod(0o644)
    settings.prepare()
    assert _mode(settings.state) == 0o700 and _mode(settings.flwr_home) == 0o700
    for name in ("superlink.db", "hospitals.json", "runtime.secret", "flwr-home/config.toml"):
        assert _mode(settings.state / name) == 0o600, name
    secret = settings.runtime_secret.read_bytes()
    assert len(secret) == 32
    settings.prepare()
    assert settings.runtime_secret.read_bytes() == secret  # kept across restarts


def test_operator_commands_and_the_executor_use_the_loopback_port(
    settings: AggregatorSettings,
) -> None:
    superlink = settings.superlink_command("flower-superlink")
    assert superlink[superlink.index("--host") + 1] == "127.0.0.1"
    assert superlink[superlink.index("--port") + 1] == "19093"
    for flag in ("--enable-supernode-auth", "--superexec-auth-secret-file", "--ssl-keyfile"):
        assert flag in superlink
    assert superlink[superlink.index("--isolation") + 1] == "process"
    executor = settings.executor_command("flower-superexec")
    assert executor[executor.index("--runtime-api-address") + 1] == "127.0.0.1:19093"
    assert "--superexec-auth-secret-file" in executor and "--insecure" not in executor
    assert 'address = "127.0.0.1:19093"' in settings.connection_toml()
    assert settings.address == "0.0.0.0:8443"
    with pytest.raises(ConfigError, match="must differ from --port"):
        AggregatorSettings(settings.state, "0.0.0.0", 9000, 9000, settings.tls)


# --- who is registered, and revocations ---------------------------------------------


def test_the_registry_keeps_names_and_fingerprints_privately(tmp_path: Path) -> None:
    registry = HospitalRegistry(tmp_path / "state")
    registry.add(7, RegisteredHospital("hospital-1", "SHA256:a"))
    registry.add(3, RegisteredHospital("hospital-2", "SHA256:b"))
    assert registry.node_of("hospital-2") == 3 and registry.node_of("nobody") is None
    assert registry.as_setting() == "3=hospital-2,7=hospital-1"
    assert _mode(registry.path) == 0o600 and _mode(registry.path.parent) == 0o700
    registry.remove(7)
    assert registry.load() == {3: RegisteredHospital("hospital-2", "SHA256:b")}
    registry.path.write_text('{"5": "old-style"}')
    assert registry.load() == {5: RegisteredHospital("old-style", "")}


def test_a_node_is_revoked_unless_the_ca_lists_its_name_and_key_as_active() -> None:
    registered = {
        1: RegisteredHospital("kept", "SHA256:k"),
        2: RegisteredHospital("removed", "SHA256:r"),
        3: RegisteredHospital("rekeyed", "SHA256:old"),
        4: RegisteredHospital("unknown", "SHA256:u"),
    }
    records = [
        HospitalRecord("kept", "SHA256:k", "t"),
        HospitalRecord("removed", "SHA256:r", "t", revoked="t2"),
        HospitalRecord("rekeyed", "SHA256:old", "t", revoked="t2"),
        HospitalRecord("rekeyed", "SHA256:new", "t3"),
    ]
    assert sorted(revoked_nodes(registered, records)) == [2, 3, 4]


def test_revocations_are_applied_to_the_linked_aggregator(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", name="Links")
    state = tmp_path / "state"
    registry = HospitalRegistry(state)
    for node, name in ((1, "hospital-1"), (2, "hospital-2")):
        generate_node_key(tmp_path / name)
        bundle = ca.add_hospital(
            name, aggregator_address="127.0.0.1:8000", public_key=tmp_path / name / "node.pub"
        )
        registry.add(node, RegisteredHospital(name, bundle.fingerprint))
    assert linked_aggregator(ca.ca_dir) is None
    link_aggregator(ca.ca_dir, state)
    assert linked_aggregator(ca.ca_dir) == state.resolve()
    assert _mode(ca.ca_dir / "aggregator.json") == 0o600
    ca.remove_hospital("hospital-2")
    unregistered: list[int] = []

    def unregister(where: Path, node_id: int) -> None:
        assert where == state
        unregistered.append(node_id)
        HospitalRegistry(where).remove(node_id)

    assert unregister_revoked(state, ca.ca_dir, unregister) == ["hospital-2"]
    assert unregistered == [2] and sorted(registry.load()) == [1]
    assert unregister_revoked(state, ca.ca_dir, unregister) == []

    def refuse(_where: Path, _node_id: int) -> None:
        raise ControlError("connection refused")

    ca.remove_hospital("hospital-1")
    with pytest.raises(ControlError, match="could not unregister hospital-1 .*connection refused"):
        unregister_revoked(state, ca.ca_dir, refuse)
    assert sorted(registry.load()) == [1]  # still registered: the next start retries
