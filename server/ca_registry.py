"""The CA's registry (``registry.json``): every hospital recorded, revocations included.

The CA writes it (:mod:`server.certificate_authority`); the aggregator reads it,
without the CA key, to refuse a revoked hospital (:mod:`server.node_registration`).
A hospital's record holds its name and its node public key's fingerprint, never a
private key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.shared.credentials import CredentialError
from fedcare.shared.private_files import write_public

REGISTRY = "registry.json"
REGISTRY_VERSION = 1

# A name starts with a letter or digit: it becomes a folder, a command argument, a CSV cell.
_HOSPITAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True)
class HospitalRecord:
    """A hospital the CA recorded (an entry of ``registry.json``).

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
        """Whether its key is still valid in this CA's eyes."""
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        """Return the record as ``registry.json`` stores it."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "revoked": self.revoked,
        }


def check_hospital_name(name: str) -> None:
    """Refuse a hospital name that could not be a folder, a command argument or a CSV cell.

    Raises
    ------
    CredentialError
        Unless ``name`` is 1-63 letters, digits, ``-`` or ``_``, starting with a
        letter or digit.
    """
    if not _HOSPITAL_NAME.fullmatch(name):
        raise CredentialError(
            f"hospital name {name!r:.70} must be 1-63 letters, digits, '-' or '_', starting "
            "with a letter or digit (e.g. st-marys_icu)"
        )


def read_registry(ca_dir: Path) -> dict[str, Any]:
    """Read ``registry.json`` of the CA in ``ca_dir`` as it is stored.

    Raises
    ------
    CredentialError
        If it is missing or damaged.
    """
    path = ca_dir / REGISTRY
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialError(
            f"{path} is missing; is {ca_dir} the federation's CA folder (`fedcare ca init`)?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CredentialError(f"{path} is damaged (not JSON); restore it from backup") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("hospitals"), list):
        raise CredentialError(f"{path} is damaged (no hospital list); restore it from backup")
    return raw


def hospital_records(ca_dir: Path) -> list[HospitalRecord]:
    """Every hospital the CA in ``ca_dir`` recorded, oldest first (no CA key needed).

    Raises
    ------
    CredentialError
        If the registry is missing or damaged.
    """
    try:
        return [
            HospitalRecord(
                name=str(entry["name"]),
                fingerprint=str(entry["fingerprint"]),
                created=str(entry["created"]),
                revoked=None if entry.get("revoked") is None else str(entry["revoked"]),
            )
            for entry in read_registry(ca_dir)["hospitals"]
        ]
    except (KeyError, TypeError, AttributeError):
        raise CredentialError(
            f"{ca_dir / REGISTRY} is damaged (unexpected structure); restore it from backup"
        ) from None


def create_registry(ca_dir: Path, *, federation: str, ca_fingerprint: str) -> None:
    """Write the empty registry of a new CA (no hospital, no server certificate yet)."""
    registry = {
        "version": REGISTRY_VERSION,
        "federation": federation,
        "ca-fingerprint": ca_fingerprint,
        "hospitals": [],
    }
    _write_registry(ca_dir, registry)


def save_hospitals(ca_dir: Path, records: list[HospitalRecord]) -> None:
    """Replace the registry's hospital list with ``records`` (revoked ones stay in it)."""
    registry = read_registry(ca_dir)
    registry["hospitals"] = [record.to_json() for record in records]
    _write_registry(ca_dir, registry)


def save_server_certificate(
    ca_dir: Path, *, hosts: tuple[str, ...], not_after: str, fingerprint: str, issued: str
) -> None:
    """Record the aggregator's current TLS certificate (dates in ISO 8601)."""
    registry = read_registry(ca_dir)
    registry["server"] = {
        "hosts": list(hosts),
        "not-after": not_after,
        "fingerprint": fingerprint,
        "issued": issued,
    }
    _write_registry(ca_dir, registry)


def _write_registry(ca_dir: Path, registry: dict[str, Any]) -> None:
    # Replaced atomically; it holds no secret (fingerprints and dates).
    write_public(ca_dir / REGISTRY, (json.dumps(registry, indent=2) + "\n").encode())
