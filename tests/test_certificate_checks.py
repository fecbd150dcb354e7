"""Certificate checks: what a hospital's TLS client accepts, on certificates the CA issued."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from fedcare.server import certificate_authority
from fedcare.server.certificate_authority import CertificateAuthority, init_ca
from fedcare.shared.certificate_checks import (
    check_certificate,
    probe_tls,
    verify_server_certificate,
)
from fedcare.shared.credentials import CredentialError


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", name="Test federation")


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LOCALHOST.", "node1.example.org", "[::1]"]
)
def test_verify_server_certificate_accepts_covered_hosts(
    ca: CertificateAuthority, host: str
) -> None:
    issued = ca.issue_server_certificate(["127.0.0.1", "localhost", "*.example.org", "::1"])
    status = verify_server_certificate(issued.ca_certificate, issued.certificate, host)
    assert status.valid and not status.expiring_soon and status.days_left >= 824


@pytest.mark.parametrize("host", ["10.0.0.9", "example.org", "a.b.example.org", "localhost2"])
def test_verify_server_certificate_names_an_uncovered_host(
    ca: CertificateAuthority, host: str
) -> None:
    issued = ca.issue_server_certificate(["127.0.0.1", "localhost", "*.example.org"])
    with pytest.raises(CredentialError) as caught:
        verify_server_certificate(issued.ca_certificate, issued.certificate, host)
    message = str(caught.value)
    assert f"but not {host}" in message
    assert f"fedcare ca server --dir CA --host *.example.org --host {host}`" in message


def test_verify_server_certificate_rejects_another_federations_certificate(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    foreign = init_ca(tmp_path / "foreign", name="Foreign").issue_server_certificate(["127.0.0.1"])
    with pytest.raises(
        CredentialError, match="was not signed by the CA in .*re-issue it with `fedcare ca server`"
    ):
        verify_server_certificate(ca.ca_dir / "ca.crt", foreign.certificate, "127.0.0.1")
    with pytest.raises(CredentialError, match="is not a CA certificate"):
        verify_server_certificate(foreign.certificate, foreign.certificate, "127.0.0.1")


def test_verify_server_certificate_rejects_an_expired_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both issued 30 days ago, the server certificate for 1 day: expired today, CA still valid.
    past = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=30)
    monkeypatch.setattr(certificate_authority, "_now", lambda: past)
    issued = init_ca(tmp_path / "ca", name="Old").issue_server_certificate(["127.0.0.1"], days=1)
    monkeypatch.undo()
    with pytest.raises(
        CredentialError,
        match=r"expired on .*re-issue it with `fedcare ca server --dir CA --host HOST`",
    ):
        verify_server_certificate(issued.ca_certificate, issued.certificate, "127.0.0.1")
    assert check_certificate(issued.certificate).expired


def test_check_certificate_flags_expiry_and_clock_skew(ca: CertificateAuthority) -> None:
    path = ca.issue_server_certificate(["localhost"], days=20).certificate
    soon = check_certificate(path)
    assert soon.valid and soon.expiring_soon and 18 <= soon.days_left <= 20
    assert not check_certificate(path, warn_days=5).expiring_soon
    later = check_certificate(path, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=40))
    assert later.expired and not later.valid and later.days_left < 0 and not later.expiring_soon
    earlier = check_certificate(path, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    assert earlier.not_yet_valid and not earlier.valid
    with pytest.raises(CredentialError, match="is not a PEM certificate"):
        check_certificate(ca.ca_dir / "registry.json")


@pytest.fixture
def tls_server(ca: CertificateAuthority) -> Iterator[int]:
    """A TLS 1.3 server presenting the CA-issued certificate, for one handshake."""
    issued = ca.issue_server_certificate(["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(issued.certificate, issued.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        with listener, context.wrap_socket(listener.accept()[0], server_side=True):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(timeout=5)


def test_a_tls_client_trusting_only_the_ca_accepts_the_server(
    ca: CertificateAuthority, tls_server: int
) -> None:
    presented = probe_tls(f"127.0.0.1:{tls_server}", ca.ca_dir / "ca.crt")
    on_disk = x509.load_pem_x509_certificate((ca.ca_dir / "server" / "server.pem").read_bytes())
    assert presented == on_disk
