"""What the CA's tests share: a hospital's own key pair, and how to spot key material."""

from __future__ import annotations

from pathlib import Path

from fedcare.shared.hospital_credentials import generate_node_key

AGGREGATOR = "127.0.0.1:8000"


def own_key(tmp_path: Path, name: str) -> Path:
    """Return the hospital's own credentials folder, with the key pair it made itself."""
    folder = tmp_path / "sites" / name
    generate_node_key(folder)
    return folder


def secret_lines(*keys: Path) -> list[str]:
    """Return the base64 body lines of PEM/OpenSSH private keys: none may ever be shown."""
    lines = []
    for key in keys:
        lines += [
            line for line in key.read_text().splitlines() if line and not line.startswith("-----")
        ]
    return lines


def flat(text: str) -> str:
    """Return ``text`` with every run of white space (a wrapped line) folded to one space."""
    return " ".join(text.split())
