"""Credentials on disk: writing them safely, and checking them without the CA's key.

Used by the CA (:mod:`server.certificate_authority`) to write files, and by a
hospital's preflight to check its bundle: key permissions, key pair, CA
certificate validity, and that the aggregator's certificate is the federation's.
Nothing secret is ever put into a message or a log line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.errors import FedcareError

CA_CERTIFICATE = "ca.crt"
NODE_KEY = "node.key"
NODE_PUBLIC_KEY = "node.pub"
BUNDLE_FILE = "bundle.toml"

EXPIRY_WARNING_DAYS = 30


class CredentialError(FedcareError):
    """A certificate or key is missing, invalid, mismatched, expired or exposed."""


def _write(path: Path, content: bytes, mode: int) -> None:
    """Write atomically, creating the file with ``mode`` from the start (never wider)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_private(path: Path, content: bytes) -> None:
    """Write a secret readable by its owner only (0600)."""
    _write(path, content, 0o600)


def write_public(path: Path, content: bytes) -> None:
    """Write a non-secret file (0644)."""
    _write(path, content, 0o644)


def public_key_fingerprint(openssh_public_key: bytes) -> str:
    """SHA-256 of an OpenSSH public key line's key blob, as hex."""
    blob = openssh_public_key.split()[1]
    return hashlib.sha256(blob).hexdigest()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, as hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class CertificateStatus:
    """Validity of a certificate right now."""

    subject: str
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def days_left(self) -> int:
        """Whole days until it expires (negative once expired)."""
        return (self.not_after - dt.datetime.now(dt.timezone.utc)).days

    @property
    def valid_now(self) -> bool:
        """Whether now lies inside its validity period."""
        now = dt.datetime.now(dt.timezone.utc)
        return self.not_before <= now <= self.not_after


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM certificate, with a clear error when it is missing or garbled."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CredentialError(f"{path} does not exist") from None
    except ValueError:
        raise CredentialError(f"{path} is not a PEM certificate") from None


def check_certificate(path: Path) -> CertificateStatus:
    """The validity period of the certificate at ``path``."""
    certificate = load_certificate(path)
    return CertificateStatus(
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


@dataclass(frozen=True)
class Bundle:
    """A hospital's installed credentials (from ``fedcare ca add-hospital``)."""

    folder: Path
    hospital: str
    aggregator: str
    fingerprint: str

    @property
    def ca_certificate(self) -> Path:
        """The federation's CA certificate (to trust the aggregator)."""
        return self.folder / CA_CERTIFICATE

    @property
    def node_key(self) -> Path:
        """The hospital's node-authentication private key."""
        return self.folder / NODE_KEY


def load_bundle(folder: Path) -> Bundle:
    """Read and check a hospital's bundle.

    Raises
    ------
    CredentialError
        If a file is missing, the private key is readable by others, is not an
        EC P-384 key in OpenSSH format, or does not match the bundle's public key.
    """
    try:
        meta = tomllib.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialError(f"{folder / BUNDLE_FILE} does not exist; is {folder} a hospital bundle?") from None
    key_path = folder / NODE_KEY
    if not key_path.is_file():
        raise CredentialError(f"{key_path} does not exist; the bundle is incomplete")
    if key_path.stat().st_mode & 0o077:
        raise CredentialError(f"{key_path} is readable by other users; run `chmod 600 {key_path}`")
    try:
        key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        raise CredentialError(f"{key_path} is not an OpenSSH private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise CredentialError(f"{key_path} must be an EC P-384 key (Flower's node authentication)")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if public_key_fingerprint(public) != meta.get("node-key-fingerprint"):
        raise CredentialError(f"{key_path} does not match the key fingerprint in {folder / BUNDLE_FILE}")
    load_certificate(folder / CA_CERTIFICATE)
    return Bundle(
        folder=folder,
        hospital=str(meta.get("hospital", "")),
        aggregator=str(meta.get("aggregator", "")),
        fingerprint=public_key_fingerprint(public),
    )


def probe_tls(address: str, ca_certificate: Path, *, timeout: float = 5.0) -> x509.Certificate:
    """Open a TLS connection to ``host:port`` trusting only ``ca_certificate``.

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
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca_certificate))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as error:
        raise CredentialError(
            f"the aggregator at {address} presented a certificate this bundle's CA does not vouch for "
            f"({error.verify_message}); re-issue it with `fedcare ca server --host {host}` or fetch the "
            "federation's current bundle"
        ) from None
    except (OSError, ValueError) as error:
        raise CredentialError(f"cannot reach the aggregator at {address} over TLS: {error}") from None
    return x509.load_der_x509_certificate(der or b"")
