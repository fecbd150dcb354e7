"""Check a run's app bundle (Flower's FAB) before anything from it is used.

A hospital runs only the fedcare it installed. The bundle a run arrives with may
therefore carry configuration and nothing else: exactly fedcare's two files
(``pyproject.toml`` and Flower's ``.info/CONTENT`` manifest), fedcare's own
component names and publisher, no AgentApp, no dependencies to install, nothing
executable. :func:`verify_bundle` reads the bundle's bytes in memory (it never
extracts a file) and refuses anything else with one sentence saying why; the
hospital then answers the run with that sentence and runs nothing.

Flower's own installer checks the manifest's hashes but not that every file is
listed in it, and puts the bundle's folder first on ``sys.path``: a bundle that
shipped ``client/`` or ``fedcare/`` would replace the installed code. Hence the
exact file list.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tomllib
import zipfile
from typing import Any

from fedcare.shared.errors import FedcareError

PYPROJECT = "pyproject.toml"
MANIFEST = ".info/CONTENT"
BUNDLE_FILES = frozenset({PYPROJECT, MANIFEST})
PUBLISHER = "fedcare"
COMPONENTS = {
    "serverapp": "fedcare.server.server_app:app",
    "clientapp": "fedcare.client.client_app:app",
}
"""fedcare's components (as :mod:`server.submission` writes them): the only ones accepted."""

MAX_FILE_BYTES = 4 * 1024 * 1024
"""Largest uncompressed file accepted; a configuration with its contract is far smaller."""


class BundleRefused(FedcareError):
    """The run's bundle is not fedcare's configuration-only bundle; nothing from it was used."""


def verify_bundle(content: bytes, *, declared_hash: str, run_hash: str) -> dict[str, Any]:
    """Check a bundle and return its parsed ``pyproject.toml``.

    Parameters
    ----------
    content : bytes
        The bundle as the SuperNode received it.
    declared_hash : str
        The hash Flower sent with it.
    run_hash : str
        The hash the run was created with.

    Returns
    -------
    dict[str, Any]
        The bundle's configuration.

    Raises
    ------
    BundleRefused
        Naming the first problem found.
    """
    actual = hashlib.sha256(content).hexdigest()
    if not actual == declared_hash == run_hash:
        raise BundleRefused("the bundle's SHA-256 does not match the hash the run was created with")
    files = _read_files(content)
    _check_manifest(files[MANIFEST], files[PYPROJECT])
    try:
        config = tomllib.loads(files[PYPROJECT].decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise BundleRefused(f"the bundle's {PYPROJECT} is not valid TOML") from None
    check_app_config(config)
    return config


def check_app_config(config: dict[str, Any]) -> None:
    """Refuse a bundle configuration that is not fedcare's.

    Raises
    ------
    BundleRefused
        If the components, the publisher or the dependencies differ from fedcare's.
    """
    app = config.get("tool", {}).get("flwr", {}).get("app", {})
    components = app.get("components") if isinstance(app, dict) else None
    if not isinstance(components, dict):
        raise BundleRefused("the bundle names no Flower components")
    if "agentapp" in components:
        raise BundleRefused("the bundle asks for an AgentApp, which hospitals never run")
    if components != COMPONENTS:
        names = ", ".join(f"{k}={v}" for k, v in sorted(components.items()))
        raise BundleRefused(f"the bundle names components other than fedcare's ({names})")
    if app.get("publisher") != PUBLISHER:
        raise BundleRefused(f"the bundle's publisher is not '{PUBLISHER}'")
    dependencies = config.get("project", {}).get("dependencies", [])
    if dependencies:
        raise BundleRefused("the bundle asks for dependencies to be installed")


def _read_files(content: bytes) -> dict[str, bytes]:
    """Return the bundle's two files, refusing any other entry (or a link, or an executable)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise BundleRefused("the bundle is not a zip archive") from None
    with archive:
        entries = archive.infolist()
        names = [entry.filename for entry in entries]
        if len(names) != len(BUNDLE_FILES) or set(names) != BUNDLE_FILES:
            extra = sorted(set(names) - BUNDLE_FILES)[:5]
            raise BundleRefused(
                f"the bundle holds files other than {PYPROJECT} and its manifest "
                f"({', '.join(extra) or 'a duplicate or missing entry'}); hospitals accept "
                "configuration only"
            )
        for entry in entries:
            _check_entry(entry)
        return {entry.filename: archive.read(entry) for entry in entries}


def _check_entry(entry: zipfile.ZipInfo) -> None:
    mode = entry.external_attr >> 16
    if entry.is_dir() or stat.S_ISLNK(mode) or mode & 0o111:
        raise BundleRefused(f"the bundle's {entry.filename} is a folder, link or executable")
    if entry.file_size > MAX_FILE_BYTES:
        raise BundleRefused(f"the bundle's {entry.filename} is larger than any configuration")


def _check_manifest(manifest: bytes, pyproject: bytes) -> None:
    """Refuse a manifest that lists anything but ``pyproject.toml`` with its true hash."""
    lines = manifest.decode("utf-8", errors="replace").strip().splitlines()
    fields = [line.split(",") for line in lines]
    expected = hashlib.sha256(pyproject).hexdigest()
    if len(fields) != 1 or len(fields[0]) != 3 or fields[0][:2] != [PYPROJECT, expected]:
        raise BundleRefused(
            f"the bundle's manifest does not list exactly {PYPROJECT} with its hash"
        )
