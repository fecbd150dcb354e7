"""A small certificate authority for one federation, built on ``cryptography``.

It issues what Flower's deployment engine needs and nothing more:

* the aggregator's TLS certificate (EC P-384, signed by the federation's CA);
* one node-authentication key pair per hospital (EC P-384, OpenSSH format, the
  form Flower 1.41's ``flwr supernode register`` and ``--auth-supernode-private-key``
  take), in a bundle the hospital installs: the CA certificate to trust the
  aggregator, its own keys, and the aggregator's address.

Layout of the CA folder::

    ca/
      ca.key, ca.crt        the federation's root (ca.key never leaves this folder)
      registry.json         every hospital issued, with its key fingerprint and status
      server/               ca.crt, server.pem, server.key for `fedcare aggregator start`
      hospitals/<name>/     ca.crt, node.key, node.pub, bundle.toml for that hospital

Adding a hospital never touches anyone else's credentials; removing one revokes
only that one. Private keys are created owner-only (0600) in owner-only folders.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.credentials import (
    BUNDLE_FILE,
    CA_CERTIFICATE,
    NODE_KEY,
    NODE_PUBLIC_KEY,
    CredentialError,
    certificate_fingerprint,
    public_key_fingerprint,
    write_private,
    write_public,
)

CA_KEY = "ca.key"
REGISTRY = "registry.json"
SERVER_DIR = "server"
SERVER_CERTIFICATE = "server.pem"
SERVER_KEY = "server.key"
HOSPITALS_DIR = "hospitals"

_CURVE = ec.SECP384R1()
_HASH = hashes.SHA384()
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class HospitalRecord:
    """A hospital the CA issued credentials to.

    Attributes
    ----------
    name : str
        The hospital's name.
    fingerprint : str
        SHA-256 fingerprint of its node public key.
    created : str
        When it was added (ISO 8601, UTC).
    revoked : str | None
        When it was removed, if it was.
    """

    name: str
    fingerprint: str
    created: str
    revoked: str | None = None


@dataclass(frozen=True)
class HospitalBundle:
    """Where a hospital's bundle was written and what identifies it."""

    name: str
    folder: Path
    fingerprint: str


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class CertificateAuthority:
    """The federation's CA, kept in a folder (see the module docstring).

    Use :func:`init_ca` to create one and :meth:`load` to open it.
    """

    def __init__(self, folder: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.folder = folder
        self._key = key
        self.certificate = certificate

    @classmethod
    def load(cls, folder: Path) -> CertificateAuthority:
        """Open the CA in ``folder``.

        Raises
        ------
        CredentialError
            If the folder holds no CA, or its files cannot be read.
        """
        key_path, cert_path = folder / CA_KEY, folder / CA_CERTIFICATE
        if not key_path.is_file() or not cert_path.is_file():
            raise CredentialError(f"{folder} holds no CA; create one with `fedcare ca init --dir {folder}`")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError:
            raise CredentialError(f"the CA files in {folder} cannot be read; restore them from backup") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CredentialError(f"{key_path} is not an EC key")
        return cls(folder, key, certificate)

    # --- the aggregator ------------------------------------------------------

    def issue_server_certificate(self, hosts: list[str], *, days: int = 825) -> Path:
        """Issue the aggregator's TLS certificate for ``hosts`` (names or IPs).

        Returns
        -------
        Path
            The folder holding ``ca.crt``, ``server.pem`` and ``server.key``.
        """
        if not hosts:
            raise CredentialError("give at least one --host the hospitals will dial (name or IP)")
        key = ec.generate_private_key(_CURVE)
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_subject(hosts[0]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._key, _HASH)
        )
        folder = self.folder / SERVER_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        write_private(folder / SERVER_KEY, _key_bytes(key))
        write_public(folder / SERVER_CERTIFICATE, certificate.public_bytes(serialization.Encoding.PEM))
        write_public(folder / CA_CERTIFICATE, (self.folder / CA_CERTIFICATE).read_bytes())
        return folder

    # --- hospitals -----------------------------------------------------------

    def hospitals(self) -> list[HospitalRecord]:
        """Every hospital ever issued, revoked ones included."""
        raw = json.loads((self.folder / REGISTRY).read_text(encoding="utf-8"))
        return [HospitalRecord(**entry) for entry in raw["hospitals"]]

    def add_hospital(self, name: str, *, aggregator_address: str) -> HospitalBundle:
        """Create hospital ``name``'s node key pair and bundle.

        Raises
        ------
        CredentialError
            For an invalid name, or one that is already active.
        """
        if not _NAME.match(name):
            raise CredentialError(f"hospital name '{name}' must be 1-63 letters, digits, '-' or '_'")
        records = self.hospitals()
        if any(r.name == name and r.revoked is None for r in records):
            raise CredentialError(f"hospital '{name}' already has credentials; remove it first to re-issue")
        key = ec.generate_private_key(_CURVE)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        (self.folder / HOSPITALS_DIR).mkdir(mode=0o700, exist_ok=True)
        folder = self.folder / HOSPITALS_DIR / name
        folder.mkdir(mode=0o700, exist_ok=True)
        write_private(
            folder / NODE_KEY,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ),
        )
        write_public(folder / NODE_PUBLIC_KEY, public + b"\n")
        write_public(folder / CA_CERTIFICATE, (self.folder / CA_CERTIFICATE).read_bytes())
        record = HospitalRecord(name=name, fingerprint=public_key_fingerprint(public), created=_now().isoformat())
        bundle = {
            "hospital": name,
            "aggregator": aggregator_address,
            "node-key-fingerprint": record.fingerprint,
            "ca-fingerprint": certificate_fingerprint(self.certificate),
            "created": record.created,
        }
        write_public(folder / BUNDLE_FILE, tomli_w.dumps(bundle).encode())
        self._save([r for r in records if r.name != name] + [record])
        return HospitalBundle(name=name, folder=folder, fingerprint=record.fingerprint)

    def remove_hospital(self, name: str) -> HospitalRecord:
        """Revoke hospital ``name``: mark it in the registry and delete its private key here.

        Returns
        -------
        HospitalRecord
            The revoked record (unregister its key at the aggregator too).
        """
        records = self.hospitals()
        active = [r for r in records if r.name == name and r.revoked is None]
        if not active:
            raise CredentialError(f"no active hospital '{name}' in {self.folder / REGISTRY}")
        revoked = HospitalRecord(**{**asdict(active[0]), "revoked": _now().isoformat()})
        (self.folder / HOSPITALS_DIR / name / NODE_KEY).unlink(missing_ok=True)
        self._save([revoked if r is active[0] else r for r in records])
        return revoked

    def _save(self, records: list[HospitalRecord]) -> None:
        payload = json.dumps({"hospitals": [asdict(r) for r in records]}, indent=2) + "\n"
        write_public(self.folder / REGISTRY, payload.encode())


def init_ca(folder: Path, *, name: str, days: int = 3650) -> CertificateAuthority:
    """Create the federation's CA in ``folder``.

    Raises
    ------
    CredentialError
        If ``folder`` already holds a CA: a new one would invalidate every
        credential it issued.
    """
    if (folder / CA_KEY).exists() or (folder / CA_CERTIFICATE).exists():
        raise CredentialError(
            f"{folder} already holds a CA; replacing it would invalidate every hospital's credentials"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(_CURVE)
    now = _now()
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_subject(f"{name} federation CA"))
        .issuer_name(_subject(f"{name} federation CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _HASH)
    )
    write_private(folder / CA_KEY, _key_bytes(key))
    write_public(folder / CA_CERTIFICATE, certificate.public_bytes(serialization.Encoding.PEM))
    write_public(folder / REGISTRY, b'{"hospitals": []}\n')
    return CertificateAuthority(folder, key, certificate)
