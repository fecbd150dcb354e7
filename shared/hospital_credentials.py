"""A hospital's credentials: a node key it makes itself, and what the operator returns.

A hospital generates its node-authentication key pair on its own machine
(``fedcare hospital keygen``). Only the public half travels to the federation's
operator, who records it (``fedcare ca add-hospital NAME --public-key node.pub``)
and sends back two public files. The hospital's credentials folder (0700)::

    credentials/
      node.key      the private key (EC P-384, OpenSSH, 0600); never leaves this folder
      node.pub      its public half, sent to the operator
      ca.crt        from the operator: the federation's CA, to trust the aggregator
      bundle.toml   from the operator: the hospital's name, the aggregator's address,
                    and the fingerprints of node.pub and ca.crt

The CA never sees, writes or stores a hospital's private key, so the operator
cannot act as a hospital. No error message here contains key material.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.shared.certificate_checks import load_certificate
from fedcare.shared.credentials import (
    CA_CERTIFICATE,
    CredentialError,
    certificate_fingerprint,
    openssh_public_key,
    public_key_fingerprint,
)
from fedcare.shared.private_files import (
    is_exposed,
    private_directory,
    write_private,
    write_public,
)

NODE_KEY = "node.key"
NODE_PUBLIC_KEY = "node.pub"
BUNDLE_FILE = "bundle.toml"
BUNDLE_VERSION = 2
"""Version 2: the hospital made its own key (version 1 bundles held a CA-made one)."""

_BUNDLE_KEYS = ("hospital", "aggregator", "node-key-fingerprint", "ca-fingerprint", "created")


def _is_p384(key: object) -> bool:
    # Flower's node authentication takes EC keys on P-384 in OpenSSH form.
    return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP384R1
    )


def generate_node_key(folder: Path) -> str:
    """Create this hospital's node key pair in ``folder`` (made or tightened to 0700).

    Returns
    -------
    str
        The public key's fingerprint, for the operator to compare out of band.

    Raises
    ------
    CredentialError
        If ``folder`` already holds a node key: replacing it would lock the
        hospital out until the operator records the new public key.
    """
    key_path, public_path = folder / NODE_KEY, folder / NODE_PUBLIC_KEY
    if key_path.exists() or public_path.exists():
        raise CredentialError(
            f"{folder} already holds a node key; keep it (its public half is {public_path}), "
            f"or move {key_path} and {public_path} away first to make a new one "
            "(the operator must then record the new node.pub)"
        )
    private_directory(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    write_private(key_path, private)
    public = openssh_public_key(key)
    write_public(public_path, public + b"\n")
    return public_key_fingerprint(public)


def read_node_public_key(path: Path) -> bytes:
    """Read a hospital's ``node.pub``: the OpenSSH line of an EC P-384 public key.

    Returns
    -------
    bytes
        The key line without comment or newline, as Flower registers it.

    Raises
    ------
    CredentialError
        If the file is missing, holds a private key, or is not an EC P-384
        OpenSSH public key.
    """
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(
            f"{path} does not exist; the hospital makes it with `fedcare hospital keygen`"
        ) from None
    if b"PRIVATE KEY" in content:
        raise CredentialError(
            f"{path} is a private key; ask the hospital for its node.pub (the private "
            "node.key must never leave the hospital: it should make a new key pair now)"
        )
    try:
        public = serialization.load_ssh_public_key(content)
    except (ValueError, UnsupportedAlgorithm):
        raise CredentialError(
            f"{path} is not an OpenSSH public key; send the node.pub `fedcare hospital keygen` made"
        ) from None
    if not _is_p384(public):
        raise CredentialError(
            f"{path} must be an EC P-384 key (what Flower's node authentication takes)"
        )
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def load_node_key(folder: Path) -> str:
    """Check the hospital's own key pair in ``folder``; return the public key's fingerprint.

    Raises
    ------
    CredentialError
        If ``node.key`` is missing, readable by others, not an unencrypted EC
        P-384 OpenSSH key, or ``node.pub`` is not its public half.
    """
    key_path = folder / NODE_KEY
    if not key_path.is_file():
        raise CredentialError(
            f"{key_path} does not exist; make the hospital's key pair with "
            f"`fedcare hospital keygen --out {folder}`"
        )
    if is_exposed(key_path):
        raise CredentialError(f"{key_path} is readable by other users; run `chmod 600 {key_path}`")
    try:
        key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialError(
            f"{key_path} is not an unencrypted OpenSSH private key (Flower needs that form)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _is_p384(key):
        raise CredentialError(
            f"{key_path} must be an EC P-384 key (what Flower's node authentication takes)"
        )
    public = openssh_public_key(key)
    if read_node_public_key(folder / NODE_PUBLIC_KEY) != public:
        raise CredentialError(
            f"{folder / NODE_PUBLIC_KEY} does not belong to {key_path}; the files are mixed up "
            "(restore the pair `fedcare hospital keygen` made)"
        )
    return public_key_fingerprint(public)


@dataclass(frozen=True)
class HospitalBundle:
    """What the operator returns for a hospital's public key (``bundle.toml`` plus ``ca.crt``).

    Attributes
    ----------
    name : str
        The hospital's name in the federation.
    folder : Path
        Where the files are: the hospital's credentials folder, or the CA's
        ``hospitals/<name>`` folder the operator sends them from.
    aggregator : str
        ``HOST:PORT`` the hospital connects to.
    fingerprint : str
        SHA-256 fingerprint of the node public key (as ``ssh-keygen -lf`` prints it).
    ca_fingerprint : str
        SHA-256 fingerprint of the federation's CA certificate.
    created : str
        When the operator recorded the key (ISO 8601, UTC).
    """

    name: str
    folder: Path
    aggregator: str
    fingerprint: str
    ca_fingerprint: str
    created: str

    @property
    def ca_certificate(self) -> Path:
        """The federation's CA certificate (to trust the aggregator)."""
        return self.folder / CA_CERTIFICATE

    @property
    def node_public_key(self) -> Path:
        """The hospital's public key, which the aggregator registers."""
        return self.folder / NODE_PUBLIC_KEY

    @property
    def node_key(self) -> Path:
        """The hospital's private key (only ever in the hospital's own folder)."""
        return self.folder / NODE_KEY

    def to_toml(self) -> dict[str, Any]:
        """Return the content of ``bundle.toml``."""
        return {
            "version": BUNDLE_VERSION,
            "hospital": self.name,
            "aggregator": self.aggregator,
            "node-key-fingerprint": self.fingerprint,
            "ca-fingerprint": self.ca_fingerprint,
            "created": self.created,
        }


def _read_bundle_file(folder: Path, fingerprint: str) -> dict[str, Any]:
    path = folder / BUNDLE_FILE
    try:
        meta = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialError(
            f"{path} does not exist yet: send {folder / NODE_PUBLIC_KEY} (fingerprint "
            f"{fingerprint}) to the federation's operator and put the ca.crt and bundle.toml "
            f"they return into {folder}"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise CredentialError(
            f"{path} is not valid TOML; ask the federation operator for it again"
        ) from None
    missing = [key for key in _BUNDLE_KEYS if not isinstance(meta.get(key), str)]
    if missing:
        raise CredentialError(
            f"{path} lacks {', '.join(missing)}; ask the federation operator for it again"
        )
    return meta


def load_bundle(folder: Path) -> HospitalBundle:
    """Read and check a hospital's credentials folder, as the hospital holds it.

    Parameters
    ----------
    folder : Path
        The hospital's credentials folder (``credentials`` in ``site.toml``).

    Raises
    ------
    CredentialError
        If the node key fails :func:`load_node_key`, the operator's files are
        missing or unreadable, ``bundle.toml`` was issued for another key, or
        ``ca.crt`` is not the CA it names.
    """
    fingerprint = load_node_key(folder)
    meta = _read_bundle_file(folder, fingerprint)
    if meta["node-key-fingerprint"] != fingerprint:
        raise CredentialError(
            f"{folder / BUNDLE_FILE} was issued for another key, not this folder's node.key "
            f"({fingerprint}); send this node.pub to the operator and ask for its bundle"
        )
    if certificate_fingerprint(load_certificate(folder / CA_CERTIFICATE)) != meta["ca-fingerprint"]:
        raise CredentialError(
            f"{folder / CA_CERTIFICATE} is not the CA {folder / BUNDLE_FILE} names; "
            "put the ca.crt that came with the bundle there"
        )
    return HospitalBundle(
        name=meta["hospital"],
        folder=folder,
        aggregator=meta["aggregator"],
        fingerprint=fingerprint,
        ca_fingerprint=meta["ca-fingerprint"],
        created=meta["created"],
    )
