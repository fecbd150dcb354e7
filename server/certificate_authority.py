"""A small certificate authority for one federation, built on ``cryptography``.

It issues what Flower's deployment engine needs and nothing more:

* the aggregator's TLS certificate (EC P-384, signed by the federation's CA),
  for the aggregator's front (nginx) and ``flower-superlink``; it always covers
  ``127.0.0.1`` and ``localhost`` too, where the aggregator's own processes and
  the operator's commands reach the SuperLink;
* a record of each hospital's node public key (EC P-384, OpenSSH format, the form
  Flower 1.41's ``flwr supernode register`` takes). The hospital made the key pair
  itself (``fedcare hospital keygen``); the CA never sees its private half. What
  goes back to the hospital is public: the CA certificate and ``bundle.toml``
  (its name, the aggregator's address and both fingerprints).

Layout of the CA folder (folders 0700, the CA key 0600)::

    ca/
      ca.key, ca.crt        the federation's root (ca.key never leaves this folder)
      registry.json         every hospital recorded (with revocations), the server certificate
      server/               ca.crt, server.pem, server.key for `fedcare aggregator start`
      hospitals/<name>/     node.pub (from the hospital); ca.crt, bundle.toml (back to it)

Adding a hospital never touches anyone else's credentials; removing one revokes
only that one, and re-issuing the server certificate touches no hospital. The
aggregator reads ``registry.json`` (no CA key needed) to refuse revoked hospitals.
The registry assumes one operator at a time (no locking between concurrent commands).
What each certificate says is decided in :mod:`server.certificate_issuing`, the
registry's layout in :mod:`server.ca_registry`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import tomli_w
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.server.ca_registry import (
    REGISTRY,
    HospitalRecord,
    check_hospital_name,
    create_registry,
    hospital_records,
    read_registry,
    save_hospitals,
    save_server_certificate,
)
from fedcare.server.certificate_issuing import (
    ca_certificate,
    new_private_key,
    pem,
    pkcs8,
    server_certificate,
)
from fedcare.shared.credentials import (
    CA_CERTIFICATE,
    LOOPBACK_HOSTS,
    CredentialError,
    certificate_fingerprint,
    normalize_host,
    public_key_fingerprint,
    split_address,
)
from fedcare.shared.hospital_credentials import (
    BUNDLE_FILE,
    HospitalBundle,
    read_node_public_key,
)
from fedcare.shared.private_files import (
    is_exposed,
    make_private_directory,
    write_private,
    write_public,
)

CA_KEY = "ca.key"
SERVER_DIR = "server"
SERVER_CERTIFICATE = "server.pem"
SERVER_KEY = "server.key"
HOSPITALS_DIR = "hospitals"


def _now() -> dt.datetime:
    # The single clock of this module (tests move it to issue expired certificates).
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


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


def _check_days(days: int) -> None:
    if days < 1:
        raise CredentialError(f"a certificate must be valid for at least 1 day (got --days {days})")


def _check_federation_name(name: str) -> None:
    # The name ends up in the CA certificate's common name (at most 64 characters).
    if not name.strip() or len(name) > 60 or not name.isprintable():
        raise CredentialError(
            "the federation name must be 1-60 printable characters, e.g. --name 'Lung study'"
        )


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
        read_registry(ca_dir)
        return cls(ca_dir, key, certificate)

    # --- the aggregator ------------------------------------------------------

    def issue_server_certificate(self, hosts: list[str], *, days: int = 825) -> ServerCredentials:
        """Issue (or re-issue) the aggregator's TLS certificate for ``hosts``.

        Parameters
        ----------
        hosts : list[str]
            Every DNS name and IP address hospitals dial; IPs become IPAddress
            SANs, the rest DNSName SANs. ``127.0.0.1`` and ``localhost`` are
            always added: the aggregator's processes talk to each other there.
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
        key = new_private_key()
        certificate = server_certificate(
            self._key, self.certificate, key, names, now=now, not_after=not_after
        )
        folder = self.ca_dir / SERVER_DIR
        make_private_directory(folder)
        write_private(folder / SERVER_KEY, pkcs8(key))
        write_public(folder / SERVER_CERTIFICATE, pem(certificate))
        write_public(folder / CA_CERTIFICATE, pem(self.certificate))
        issued = ServerCredentials(folder, names, not_after, certificate_fingerprint(certificate))
        save_server_certificate(
            self.ca_dir,
            hosts=names,
            not_after=not_after.isoformat(),
            fingerprint=issued.fingerprint,
            issued=_now().isoformat(),
        )
        return issued

    @staticmethod
    def _server_hosts(hosts: list[str]) -> tuple[str, ...]:
        if not hosts:
            raise CredentialError(
                "give at least one --host that hospitals dial (a name or an IP address)"
            )
        return tuple(dict.fromkeys([*(normalize_host(host) for host in hosts), *LOOPBACK_HOSTS]))

    # --- hospitals -----------------------------------------------------------

    def hospitals(self) -> list[HospitalRecord]:
        """Every hospital ever recorded, revoked ones included, oldest first."""
        return hospital_records(self.ca_dir)

    def add_hospital(
        self, name: str, *, aggregator_address: str, public_key: Path
    ) -> HospitalBundle:
        """Record hospital ``name``'s node public key and write what goes back to it.

        Parameters
        ----------
        name : str
            1-63 letters, digits, ``-`` or ``_``, starting with a letter or digit.
        aggregator_address : str
            ``HOST:PORT`` the hospital connects to (``[IPv6]:PORT`` for IPv6).
        public_key : Path
            The hospital's ``node.pub`` (from ``fedcare hospital keygen``).

        Returns
        -------
        HospitalBundle
            The CA's ``hospitals/<name>`` folder: ``node.pub`` as recorded, and
            ``ca.crt`` and ``bundle.toml`` to send back to the hospital.

        Raises
        ------
        CredentialError
            For an invalid name, address or key, a name that is already active,
            or a key another active hospital already uses.
        """
        check_hospital_name(name)
        split_address(aggregator_address)
        key_line = read_node_public_key(public_key)
        fingerprint = public_key_fingerprint(key_line)
        records = self.hospitals()
        for record in (r for r in records if r.active):
            if record.name == name:
                raise CredentialError(
                    f"hospital '{name}' is already recorded; to replace its key, "
                    f"`fedcare ca remove-hospital {name}` first"
                )
            if record.fingerprint == fingerprint:
                raise CredentialError(
                    f"{public_key} is already the key of hospital '{record.name}'; "
                    "every hospital needs its own key pair (`fedcare hospital keygen`)"
                )
        bundle = HospitalBundle(
            name=name,
            folder=self.ca_dir / HOSPITALS_DIR / name,
            aggregator=aggregator_address.strip(),
            fingerprint=fingerprint,
            ca_fingerprint=self.fingerprint,
            created=_now().isoformat(),
        )
        make_private_directory(bundle.folder)
        write_public(bundle.node_public_key, key_line + b"\n")
        write_public(bundle.ca_certificate, pem(self.certificate))
        write_public(bundle.folder / BUNDLE_FILE, tomli_w.dumps(bundle.to_toml()).encode())
        record = HospitalRecord(name=name, fingerprint=fingerprint, created=bundle.created)
        # Revoked records stay: the registry is the history of what was recorded.
        save_hospitals(self.ca_dir, [*records, record])
        return bundle

    def remove_hospital(self, name: str) -> str:
        """Revoke hospital ``name`` in the registry; only that hospital is affected.

        An aggregator started with this CA folder refuses the key from then on
        (see :mod:`server.node_registration`).

        Returns
        -------
        str
            The revoked node public key's fingerprint.

        Raises
        ------
        CredentialError
            If no active hospital has that name.
        """
        check_hospital_name(name)
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
        save_hospitals(self.ca_dir, records)
        return revoked.fingerprint


def _load_ca_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialError(f"{path} is damaged or encrypted; restore it from backup") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CredentialError(f"{path} is not an EC key; it was not written by `fedcare ca init`")
    return key


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
    key = new_private_key()
    certificate = ca_certificate(key, name, _now(), days)
    write_private(ca_dir / CA_KEY, pkcs8(key))
    write_public(ca_dir / CA_CERTIFICATE, pem(certificate))
    create_registry(ca_dir, federation=name, ca_fingerprint=certificate_fingerprint(certificate))
    return CertificateAuthority(ca_dir, key, certificate)
