"""A small certificate authority for one federation, built on ``cryptography``.

It issues what Flower's deployment engine needs and nothing more:

* the aggregator's TLS certificate (EC P-384, signed by the federation's CA),
  for ``flower-superlink --ssl-ca-certfile --ssl-certfile --ssl-keyfile``;
* one node-authentication key pair per hospital (EC P-384, OpenSSH format, the
  form Flower 1.41's ``flwr supernode register`` and ``--auth-supernode-private-key``
  take), in a bundle the hospital installs: the CA certificate to trust the
  aggregator, its own keys, and the aggregator's address.

Layout of the CA folder (folders 0700, private keys 0600)::

    ca/
      ca.key, ca.crt        the federation's root (ca.key never leaves this folder)
      registry.json         every credential issued: hospitals (with revocations), server
      server/               ca.crt, server.pem, server.key for `fedcare aggregator start`
      hospitals/<name>/     ca.crt, node.key, node.pub, bundle.toml for that hospital

Adding a hospital never touches anyone else's credentials; removing one revokes
only that one, and re-issuing the server certificate touches no hospital. The
registry assumes one operator at a time (no locking between concurrent commands).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcare.shared.credentials import (
    BUNDLE_FILE,
    CA_CERTIFICATE,
    NODE_KEY,
    NODE_PUBLIC_KEY,
    CredentialError,
    HospitalBundle,
    certificate_fingerprint,
    normalize_host,
    openssh_public_key,
    public_key_fingerprint,
    split_address,
)
from fedcare.shared.private_files import (
    is_exposed,
    make_private_directory,
    write_private,
    write_public,
)

CA_KEY = "ca.key"
REGISTRY = "registry.json"
REGISTRY_VERSION = 1
SERVER_DIR = "server"
SERVER_CERTIFICATE = "server.pem"
SERVER_KEY = "server.key"
HOSPITALS_DIR = "hospitals"

_CURVE = ec.SECP384R1()
_HASH = hashes.SHA384()
_HOSPITAL_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")
# Certificates are dated a little in the past so a hospital whose clock runs
# slightly behind the CA's does not reject a freshly issued one.
_BACKDATE = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    # The single clock of this module (tests move it to issue expired certificates).
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class HospitalRecord:
    """A hospital the CA issued credentials to (an entry of ``registry.json``).

    Attributes
    ----------
    name : str
        The hospital's name.
    fingerprint : str
        SHA-256 fingerprint of its node public key (as ``ssh-keygen -lf`` prints it).
    created : str
        When it was added (ISO 8601, UTC).
    revoked : str | None
        When it was removed, if it was (ISO 8601, UTC).
    """

    name: str
    fingerprint: str
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        """Whether its credentials are still valid in this CA's eyes."""
        return self.revoked is None


@dataclass(frozen=True)
class ServerCredentials:
    """The aggregator's TLS files, as ``issue_server_certificate`` wrote them.

    Attributes
    ----------
    folder : Path
        ``ca_dir/server``: what ``fedcare aggregator start --tls`` takes.
    hosts : tuple[str, ...]
        The DNS names and IP addresses the certificate covers.
    not_after : datetime
        When it expires (UTC).
    fingerprint : str
        SHA-256 fingerprint of the certificate.
    """

    folder: Path
    hosts: tuple[str, ...]
    not_after: dt.datetime
    fingerprint: str

    @property
    def certificate(self) -> Path:
        """``server.pem`` (``--ssl-certfile``)."""
        return self.folder / SERVER_CERTIFICATE

    @property
    def key(self) -> Path:
        """``server.key`` (``--ssl-keyfile``), owner-only."""
        return self.folder / SERVER_KEY

    @property
    def ca_certificate(self) -> Path:
        """A copy of the CA certificate (``--ssl-ca-certfile``)."""
        return self.folder / CA_CERTIFICATE


# --- certificate building blocks -------------------------------------------


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


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


def _ca_certificate(key: ec.EllipticCurvePrivateKey, name: str, days: int) -> x509.Certificate:
    now, subject, public = _now(), _subject(f"{name} CA"), key.public_key()
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


def _check_days(days: int) -> None:
    if days < 1:
        raise CredentialError(f"a certificate must be valid for at least 1 day (got --days {days})")


def _check_federation_name(name: str) -> None:
    # The name ends up in the CA certificate's common name (at most 64 characters).
    if not name.strip() or len(name) > 60 or not name.isprintable():
        raise CredentialError(
            "the federation name must be 1-60 printable characters, e.g. --name 'Lung study'"
        )


# --- the registry ------------------------------------------------------------


def _parse_records(raw: Any, path: Path) -> list[HospitalRecord]:
    try:
        entries = raw["hospitals"]
        return [
            HospitalRecord(
                name=str(e["name"]),
                fingerprint=str(e["fingerprint"]),
                created=str(e["created"]),
                revoked=None if e.get("revoked") is None else str(e["revoked"]),
            )
            for e in entries
        ]
    except (KeyError, TypeError, AttributeError):
        raise CredentialError(
            f"{path} is damaged (unexpected structure); restore it from backup"
        ) from None


def _record_json(record: HospitalRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "fingerprint": record.fingerprint,
        "created": record.created,
        "revoked": record.revoked,
    }


class CertificateAuthority:
    """The federation's CA, kept in a folder (see the module docstring).

    Use :func:`init_ca` to create one and :meth:`load` to open it. The CA's
    private key stays inside this object and its folder; it is never shown.
    """

    def __init__(
        self, ca_dir: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate
    ) -> None:
        self.ca_dir = ca_dir
        self.certificate = certificate
        self._key = key

    def __repr__(self) -> str:
        return f"CertificateAuthority({str(self.ca_dir)!r})"

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the CA certificate (hospitals can compare it)."""
        return certificate_fingerprint(self.certificate)

    @classmethod
    def load(cls, ca_dir: Path) -> CertificateAuthority:
        """Open the CA in ``ca_dir``.

        Raises
        ------
        CredentialError
            If the folder holds no CA, its files are damaged or do not belong
            together, or the CA key is readable by other users.
        """
        key_path, cert_path = ca_dir / CA_KEY, ca_dir / CA_CERTIFICATE
        if not key_path.is_file() or not cert_path.is_file():
            raise CredentialError(
                f"{ca_dir} holds no CA; "
                f"create one with `fedcare ca init --dir {ca_dir} --name NAME`"
            )
        if is_exposed(key_path):
            raise CredentialError(
                f"{key_path} is readable by other users; run `chmod 600 {key_path}`"
            )
        key = _load_ca_key(key_path)
        try:
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError:
            raise CredentialError(f"{cert_path} is damaged; restore it from backup") from None
        if certificate.public_key() != key.public_key():
            raise CredentialError(
                f"{key_path} does not belong to {cert_path}; restore both from the same backup"
            )
        authority = cls(ca_dir, key, certificate)
        authority._read_registry()
        return authority

    # --- the aggregator ------------------------------------------------------

    def issue_server_certificate(self, hosts: list[str], *, days: int = 825) -> ServerCredentials:
        """Issue (or re-issue) the aggregator's TLS certificate for ``hosts``.

        Parameters
        ----------
        hosts : list[str]
            Every DNS name and IP address hospitals dial; IPs become IPAddress
            SANs, the rest DNSName SANs.
        days : int
            Validity; capped at the CA certificate's own expiry.

        Returns
        -------
        ServerCredentials
            Where ``server.key``, ``server.pem`` and ``ca.crt`` were written.

        Raises
        ------
        CredentialError
            If no host is given, one is not a valid name or IP, ``days`` < 1, or
            the CA certificate has expired.
        """
        names = self._server_hosts(hosts)
        _check_days(days)
        now = _now()
        if now >= self.certificate.not_valid_after_utc:
            raise CredentialError(
                "the CA certificate has expired; a new CA (`fedcare ca init`) is needed"
            )
        not_after = min(now + dt.timedelta(days=days), self.certificate.not_valid_after_utc)
        key = ec.generate_private_key(_CURVE)
        certificate = self._server_certificate(key, names, now, not_after)
        folder = self.ca_dir / SERVER_DIR
        make_private_directory(folder)
        write_private(folder / SERVER_KEY, _pkcs8(key))
        write_public(folder / SERVER_CERTIFICATE, _pem(certificate))
        write_public(folder / CA_CERTIFICATE, _pem(self.certificate))
        issued = ServerCredentials(folder, names, not_after, certificate_fingerprint(certificate))
        self._save(server=issued)
        return issued

    @staticmethod
    def _server_hosts(hosts: list[str]) -> tuple[str, ...]:
        if not hosts:
            raise CredentialError(
                "give at least one --host that hospitals dial (a name or an IP address)"
            )
        return tuple(dict.fromkeys(normalize_host(host) for host in hosts))

    def _server_certificate(
        self,
        key: ec.EllipticCurvePrivateKey,
        hosts: tuple[str, ...],
        now: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        ca_key_id = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        # Clients match on the SANs; the common name only helps people reading the certificate.
        common_name = hosts[0] if len(hosts[0]) <= 64 else "fedcare aggregator"
        return (
            x509.CertificateBuilder()
            .subject_name(_subject(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
                critical=False,
            )
            .sign(self._key, _HASH)
        )

    # --- hospitals -----------------------------------------------------------

    def hospitals(self) -> list[HospitalRecord]:
        """Every hospital ever issued, revoked ones included, oldest first."""
        return _parse_records(self._read_registry(), self.ca_dir / REGISTRY)

    def add_hospital(self, name: str, *, aggregator_address: str) -> HospitalBundle:
        """Create hospital ``name``'s node key pair and bundle.

        Parameters
        ----------
        name : str
            1-63 letters, digits, ``-`` or ``_``.
        aggregator_address : str
            ``HOST:PORT`` the hospital connects to (``[IPv6]:PORT`` for IPv6).

        Returns
        -------
        HospitalBundle
            Where the bundle was written and its key fingerprint.

        Raises
        ------
        CredentialError
            For an invalid name or address, or a name that is already active.
        """
        _check_hospital_name(name)
        split_address(aggregator_address)
        records = self.hospitals()
        if any(r.name == name and r.active for r in records):
            raise CredentialError(
                f"hospital '{name}' already has credentials; to re-issue them, "
                f"`fedcare ca remove-hospital {name}` first (and unregister it at the aggregator)"
            )
        folder = self.ca_dir / HOSPITALS_DIR / name
        make_private_directory(folder)
        bundle = self._write_bundle(folder, name, aggregator_address.strip())
        record = HospitalRecord(name=name, fingerprint=bundle.fingerprint, created=bundle.created)
        # Revoked records stay: the registry is the history of what was issued.
        self._save(records=[*records, record])
        return bundle

    def _write_bundle(self, folder: Path, name: str, aggregator: str) -> HospitalBundle:
        key = ec.generate_private_key(_CURVE)
        public = openssh_public_key(key)
        bundle = HospitalBundle(
            name=name,
            folder=folder,
            aggregator=aggregator,
            fingerprint=public_key_fingerprint(public),
            ca_fingerprint=self.fingerprint,
            created=_now().isoformat(),
        )
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        write_private(folder / NODE_KEY, private)
        write_public(folder / NODE_PUBLIC_KEY, public + b"\n")
        write_public(folder / CA_CERTIFICATE, _pem(self.certificate))
        write_public(folder / BUNDLE_FILE, tomli_w.dumps(bundle.to_toml()).encode())
        return bundle

    def remove_hospital(self, name: str) -> str:
        """Revoke hospital ``name``: mark it in the registry, delete its private key here.

        Only that hospital is affected. The aggregator still accepts the key
        until it is unregistered there (``flwr supernode unregister``).

        Returns
        -------
        str
            The revoked node public key's fingerprint.

        Raises
        ------
        CredentialError
            If no active hospital has that name.
        """
        _check_hospital_name(name)
        records = self.hospitals()
        index = next((i for i, r in enumerate(records) if r.name == name and r.active), None)
        if index is None:
            known = any(r.name == name for r in records)
            state = "is already revoked" if known else "is not in this CA"
            raise CredentialError(
                f"hospital {name!r:.70} {state}; `fedcare ca list --dir {self.ca_dir}` shows them"
            )
        revoked = replace(records[index], revoked=_now().isoformat())
        records[index] = revoked
        self._save(records=records)
        (self.ca_dir / HOSPITALS_DIR / name / NODE_KEY).unlink(missing_ok=True)
        return revoked.fingerprint

    # --- registry.json -------------------------------------------------------

    def _read_registry(self) -> dict[str, Any]:
        path = self.ca_dir / REGISTRY
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CredentialError(f"{path} is missing; restore it from backup") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CredentialError(f"{path} is damaged (not JSON); restore it from backup") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("hospitals"), list):
            raise CredentialError(f"{path} is damaged (no hospital list); restore it from backup")
        return raw

    def _save(
        self,
        *,
        records: list[HospitalRecord] | None = None,
        server: ServerCredentials | None = None,
    ) -> None:
        registry = self._read_registry()
        if records is not None:
            registry["hospitals"] = [_record_json(r) for r in records]
        if server is not None:
            registry["server"] = {
                "hosts": list(server.hosts),
                "not-after": server.not_after.isoformat(),
                "fingerprint": server.fingerprint,
                "issued": _now().isoformat(),
            }
        _write_registry(self.ca_dir / REGISTRY, registry)


def _write_registry(path: Path, registry: dict[str, Any]) -> None:
    write_public(path, (json.dumps(registry, indent=2) + "\n").encode())


def _load_ca_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialError(f"{path} is damaged or encrypted; restore it from backup") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CredentialError(f"{path} is not an EC key; it was not written by `fedcare ca init`")
    return key


def _check_hospital_name(name: str) -> None:
    if not _HOSPITAL_NAME.fullmatch(name):
        raise CredentialError(
            f"hospital name {name!r:.70} must be 1-63 letters, digits, '-' or '_' "
            "(e.g. st-marys_icu)"
        )


def init_ca(ca_dir: Path, *, name: str, days: int = 3650) -> CertificateAuthority:
    """Create the federation's CA in ``ca_dir``.

    Parameters
    ----------
    ca_dir : Path
        Folder to create it in (made 0700 if missing).
    name : str
        The federation's name, shown in the CA certificate.
    days : int
        Validity of the CA certificate.

    Raises
    ------
    CredentialError
        If ``ca_dir`` already holds a CA (a new one would invalidate every
        credential the old one issued), or ``name`` or ``days`` is invalid.
    """
    _check_federation_name(name)
    _check_days(days)
    if any((ca_dir / file).exists() for file in (CA_KEY, CA_CERTIFICATE, REGISTRY)):
        raise CredentialError(
            f"{ca_dir} already holds a CA; replacing it would invalidate every hospital's "
            "credentials. Use another --dir for a new federation"
        )
    make_private_directory(ca_dir)
    key = ec.generate_private_key(_CURVE)
    certificate = _ca_certificate(key, name, days)
    write_private(ca_dir / CA_KEY, _pkcs8(key))
    write_public(ca_dir / CA_CERTIFICATE, _pem(certificate))
    registry = {
        "version": REGISTRY_VERSION,
        "federation": name,
        "ca-fingerprint": certificate_fingerprint(certificate),
        "hospitals": [],
    }
    _write_registry(ca_dir / REGISTRY, registry)
    return CertificateAuthority(ca_dir, key, certificate)
