"""Fingerprints and addresses: the identities every credential check compares.

Used by the CA (:mod:`server.certificate_authority`), the aggregator, a
hospital's preflight and :mod:`shared.certificate_checks`:

* :func:`public_key_fingerprint` and :func:`certificate_fingerprint` name a node
  key or a certificate the way standard tools print them, so an operator can
  compare them out of band: ``ssh-keygen -lf node.pub`` for node keys and
  ``openssl x509 -noout -fingerprint -sha256`` for certificates;
* :func:`normalize_host` and :func:`split_address` check the host names and
  ``HOST:PORT`` addresses certificates and bundles carry.

Certificates themselves are checked in :mod:`shared.certificate_checks`; a
hospital's own node key and bundle are in :mod:`shared.hospital_credentials`.

Nothing secret is ever put into a message or a log line: errors name files and
what to do, never key material.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.shared.errors import FedcareError

CA_CERTIFICATE = "ca.crt"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
"""Names every aggregator certificate covers: the aggregator's own processes dial them."""

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CredentialError(FedcareError):
    """A certificate or key is missing, invalid, mismatched, expired or exposed."""


# --- fingerprints and addresses ------------------------------------------------


def public_key_fingerprint(openssh_public_key: bytes) -> str:
    """SHA-256 fingerprint of an OpenSSH public key line, as ``ssh-keygen -lf`` prints it.

    Parameters
    ----------
    openssh_public_key : bytes
        A line such as ``ecdsa-sha2-nistp384 AAAA... [comment]``.

    Returns
    -------
    str
        ``SHA256:`` followed by the unpadded base64 digest of the key blob.
    """
    fields = openssh_public_key.split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, ValueError):
        raise CredentialError("not an OpenSSH public key line") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def openssh_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return the OpenSSH public key line of ``key`` (no comment, no newline)."""
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, as ``openssl x509 -fingerprint`` prints it."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def normalize_host(host: str) -> str:
    """Check a host name or IP address and return it in canonical form.

    Parameters
    ----------
    host : str
        A DNS name (``aggregator.example.org``, ``*.example.org``) or an IPv4/IPv6
        address, optionally in brackets (``[::1]``). No port.

    Raises
    ------
    CredentialError
        If it is neither a valid IP address nor a valid DNS name.
    """
    bare = host.strip().removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = bare.rstrip(".").lower()
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise CredentialError(
            f"{host!r:.80} is not a host name or IP address; give it without a port or scheme, "
            "e.g. `aggregator.example.org` or `10.0.0.5`"
        )
    return name


def split_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[IPv6]:PORT`` for IPv6) into a checked host and port.

    Raises
    ------
    CredentialError
        If the port is missing or outside 1-65535, or the host is not valid.
    """
    host, separator, port = address.strip().rpartition(":")
    if not separator or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CredentialError(
            f"aggregator address {address!r:.80} must be HOST:PORT, "
            "e.g. `aggregator.example.org:8000`"
        )
    if ":" in host and not host.startswith("["):
        raise CredentialError(f"write an IPv6 aggregator address in brackets: `[{host}]:{port}`")
    return normalize_host(host), int(port)
