"""The federation's X.509 certificates, built in memory with ``cryptography``.

What each certificate says (names, validity, key usages, identifiers) is decided
here and nowhere else; :mod:`server.certificate_authority` decides when to issue
one and where its files go. Nothing in this module reads a clock or a file: the
caller passes the time, so every certificate a CA issues is dated by its one clock.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CURVE = ec.SECP384R1()
_HASH = hashes.SHA384()
# Certificates are dated a little in the past so a hospital whose clock runs
# slightly behind the CA's does not reject a freshly issued one.
_BACKDATE = dt.timedelta(minutes=5)


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """Generate a key pair on the federation's curve (EC P-384)."""
    return ec.generate_private_key(_CURVE)


def pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return ``key`` as unencrypted PKCS#8 PEM (written owner-only by the caller)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem(certificate: x509.Certificate) -> bytes:
    """Return ``certificate`` as PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def ca_certificate(
    key: ec.EllipticCurvePrivateKey, name: str, now: dt.datetime, days: int
) -> x509.Certificate:
    """Build the federation's self-signed root certificate, valid ``days`` from ``now``."""
    subject, public = _subject(f"{name} CA"), key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _HASH)
    )


def server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    hosts: tuple[str, ...],
    *,
    now: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """Build the aggregator's TLS certificate for ``hosts``, signed by the CA.

    ``hosts`` are checked, canonical names and IP addresses; IPs become
    IPAddress SANs, the rest DNSName SANs.
    """
    ca_key_id = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    # Clients match on the SANs; the common name only helps people reading the certificate.
    common_name = hosts[0] if len(hosts[0]) <= 64 else "fedcare aggregator"
    return (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(ca_key, _HASH)
    )
