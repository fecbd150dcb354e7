"""Certificate checks: what a hospital's TLS client accepts, checked without the CA's key.

Used by the CA's commands, the aggregator and a hospital's preflight:

* :func:`check_certificate` reports a certificate's validity period;
* :func:`verify_server_certificate` checks the aggregator's TLS certificate the
  way a hospital's TLS client will: signed by the federation's CA, valid now,
  for server authentication, and covering the host the hospital dials;
* :func:`probe_tls` opens a TLS connection trusting only the federation's CA,
  and :func:`https_status` sends one request over it.

Fingerprints and addresses are in :mod:`shared.credentials`. Nothing secret is
ever put into a message or a log line: errors name files and what to do, never
key material.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedcare.shared.credentials import (
    LOOPBACK_HOSTS,
    CredentialError,
    normalize_host,
    split_address,
)

EXPIRY_WARNING_DAYS = 30

_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


# --- certificates --------------------------------------------------------------


@dataclass(frozen=True)
class CertificateStatus:
    """Validity of a certificate at the moment it was checked.

    Attributes
    ----------
    subject : str
        The certificate's subject (RFC 4514).
    not_before, not_after : datetime
        Its validity period (UTC).
    days_left : int
        Whole days until it expires (negative once expired).
    expired : bool
        ``not_after`` has passed.
    not_yet_valid : bool
        ``not_before`` lies in the future (often a wrong clock).
    expiring_soon : bool
        Still valid, but expires within the warning period.
    """

    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    expired: bool
    not_yet_valid: bool
    expiring_soon: bool

    @property
    def valid(self) -> bool:
        """Whether it was inside its validity period when checked."""
        return not self.expired and not self.not_yet_valid


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM certificate, with a clear error when it is missing or garbled."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CredentialError(f"{path} does not exist") from None
    except ValueError:
        raise CredentialError(
            f"{path} is not a PEM certificate (damaged or the wrong file?)"
        ) from None


def certificate_status(
    certificate: x509.Certificate,
    *,
    warn_days: int = EXPIRY_WARNING_DAYS,
    now: dt.datetime | None = None,
) -> CertificateStatus:
    """Report the validity of ``certificate`` at ``now`` (default: the current time)."""
    now = now or dt.datetime.now(dt.UTC)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    days_left = (not_after - now).days
    expired = now > not_after
    return CertificateStatus(
        subject=certificate.subject.rfc4514_string(),
        not_before=not_before,
        not_after=not_after,
        days_left=days_left,
        expired=expired,
        not_yet_valid=now < not_before,
        expiring_soon=not expired and days_left < warn_days,
    )


def check_certificate(
    path: Path, *, warn_days: int = EXPIRY_WARNING_DAYS, now: dt.datetime | None = None
) -> CertificateStatus:
    """Read the certificate at ``path`` and report its validity.

    Parameters
    ----------
    path : Path
        A PEM certificate.
    warn_days : int
        Flag it as expiring soon when fewer days than this are left.
    now : datetime, optional
        The moment to check at (UTC); the current time by default.

    Raises
    ------
    CredentialError
        If the file is missing or not a PEM certificate.
    """
    return certificate_status(load_certificate(path), warn_days=warn_days, now=now)


def _reissue_hint(*hosts: str) -> str:
    # Loopback names are added by `fedcare ca server` itself.
    wanted = [host for host in dict.fromkeys(hosts) if host not in LOOPBACK_HOSTS]
    flags = " ".join(f"--host {host}" for host in wanted) or "--host HOST"
    return (
        f"re-issue it with `fedcare ca server --dir CA {flags}` (every name and IP hospitals dial)"
    )


def _check_issued_by(
    ca: x509.Certificate, server: x509.Certificate, ca_path: Path, server_path: Path
) -> None:
    constraints = _extension(ca, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CredentialError(
            f"{ca_path} is not a CA certificate; use the ca.crt from the federation's CA folder"
        )
    try:
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CredentialError(
            f"{server_path} was not signed by the CA in {ca_path} "
            "(another federation's certificate, or the CA was re-created); "
            "re-issue it with `fedcare ca server` from this federation's CA "
            "and give hospitals that CA's ca.crt"
        ) from None


def _extension(certificate: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_validity(status: CertificateStatus, path: Path, remedy: str) -> None:
    if status.expired:
        raise CredentialError(f"{path} expired on {status.not_after:%Y-%m-%d %H:%M} UTC; {remedy}")
    if status.not_yet_valid:
        raise CredentialError(
            f"{path} is not valid before {status.not_before:%Y-%m-%d %H:%M} UTC; "
            "check this machine's clock (and the CA machine's)"
        )


def _check_server_usage(server: x509.Certificate, path: Path, host: str) -> None:
    usages = _extension(server, x509.ExtendedKeyUsage)
    if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise CredentialError(
            f"{path} is not a TLS server certificate (no serverAuth usage); {_reissue_hint(host)}"
        )


def certificate_hosts(certificate: x509.Certificate) -> list[str]:
    """List the DNS names and IP addresses in a certificate's subject alternative names."""
    names = _extension(certificate, x509.SubjectAlternativeName)
    if names is None:
        return []
    return [
        *names.get_values_for_type(x509.DNSName),
        *map(str, names.get_values_for_type(x509.IPAddress)),
    ]


def _covers(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".").lower()
    if pattern == host:
        return True
    # A wildcard stands for exactly one left-most label (RFC 6125), never for an IP.
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:]
    return False


def _check_host(server: x509.Certificate, path: Path, wanted: str) -> None:
    if wanted.startswith("*"):
        raise CredentialError(f"give the exact host hospitals dial, not a wildcard ({wanted})")
    hosts = certificate_hosts(server)
    is_ip = _is_ip(wanted)
    if any(_is_ip(name) == is_ip and _covers(name, wanted) for name in hosts):
        return
    listed = ", ".join(hosts) or "no host at all"
    raise CredentialError(
        f"{path} covers {listed} but not {wanted}; {_reissue_hint(*hosts, wanted)}"
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tls_verify(ca: x509.Certificate, server: x509.Certificate, host: str, path: Path) -> None:
    # The checks above give precise messages; this one validates as a TLS client
    # would (key usages, constraints, signature algorithms) so nothing slips past.
    subject: verification.Subject = (
        x509.IPAddress(ipaddress.ip_address(host)) if _is_ip(host) else x509.DNSName(host)
    )
    verifier = (
        verification.PolicyBuilder().store(verification.Store([ca])).build_server_verifier(subject)
    )
    try:
        verifier.verify(server, [])
    except verification.VerificationError as error:
        raise CredentialError(
            f"{path} fails TLS verification for {host} ({error}); {_reissue_hint(host)}"
        ) from None


def verify_server_certificate(
    ca_cert: Path, server_cert: Path, host: str, *, warn_days: int = EXPIRY_WARNING_DAYS
) -> CertificateStatus:
    """Check the aggregator's certificate as a hospital dialling ``host`` will.

    Parameters
    ----------
    ca_cert : Path
        The federation's CA certificate (``ca.crt``).
    server_cert : Path
        The aggregator's certificate (``server.pem``).
    host : str
        The name or IP address hospitals dial (no port).
    warn_days : int
        Days before expiry from which the returned status says ``expiring_soon``.

    Returns
    -------
    CertificateStatus
        The server certificate's validity (check ``expiring_soon``).

    Raises
    ------
    CredentialError
        If the certificate is not signed by that CA, is expired or not yet
        valid, is not for server authentication, or does not cover ``host``.
    """
    host = normalize_host(host)
    ca, server = load_certificate(ca_cert), load_certificate(server_cert)
    _check_issued_by(ca, server, ca_cert, server_cert)
    _check_validity(
        certificate_status(ca),
        ca_cert,
        "a new CA means new bundles for every hospital; see `fedcare ca init`",
    )
    status = certificate_status(server, warn_days=warn_days)
    _check_validity(status, server_cert, f"{_reissue_hint(host)} and restart the aggregator")
    _check_server_usage(server, server_cert, host)
    _check_host(server, server_cert, host)
    _tls_verify(ca, server, host, server_cert)
    return status


# --- the aggregator, seen from a hospital --------------------------------------


def probe_tls(address: str, ca_certificate: Path, *, timeout: float = 5.0) -> x509.Certificate:
    """Open a TLS connection to ``HOST:PORT`` trusting only ``ca_certificate``.

    Returns
    -------
    x509.Certificate
        The certificate the aggregator presented (verified against the CA and the host).

    Raises
    ------
    CredentialError
        If it cannot be reached, or its certificate is not the federation's or
        does not cover the host.
    """
    host, port = split_address(address)
    context = ssl.create_default_context(cafile=str(ca_certificate))
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as error:
        raise CredentialError(
            f"the aggregator at {address} presented a certificate this bundle's CA "
            f"does not vouch for ({error.verify_message}); {_reissue_hint(host)}, "
            "or fetch the federation's current bundle"
        ) from None
    except (OSError, ValueError) as error:
        raise CredentialError(
            f"cannot reach the aggregator at {address} over TLS: {error}"
        ) from None
    return x509.load_der_x509_certificate(der or b"")


def https_status(
    address: str,
    path: str,
    ca_certificate: Path,
    *,
    method: str = "GET",
    content_type: str | None = None,
    timeout: float = 5.0,
) -> int | None:
    """Send an empty request to ``https://ADDRESS/PATH`` trusting only ``ca_certificate``.

    Used to check the aggregator's own processes (and, in tests, what an outsider
    gets); environment proxy settings are ignored.

    Returns
    -------
    int | None
        The HTTP status, or ``None`` if no TLS connection to a server holding a
        certificate from that CA could be made.
    """
    context = ssl.create_default_context(cafile=str(ca_certificate))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    data = b"" if method == "POST" else None
    headers = {} if content_type is None else {"Content-Type": content_type}
    request = urllib.request.Request(
        f"https://{address}{path}", data=data, method=method, headers=headers
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None
