"""Owner-only files and folders: the one place that decides how private state is written.

A hospital's ledger, audit log, keys and node config, and an aggregator's
database and keys, describe patients or grant access. They are created owner-only
(folders 0700, files 0600) from the first byte, and tightened when they already
exist with wider permissions: ``Path.mkdir(mode=0o700, exist_ok=True)`` leaves an
existing folder as it was, so it cannot be relied on alone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644


def _write(path: Path, content: bytes, mode: int) -> None:
    """Write atomically, creating the file with ``mode`` from the start (never wider).

    The content goes to a uniquely named sibling first and is renamed over
    ``path``, so a reader sees the old file or the new one, never half of one.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(folder: Path) -> None:
    # Makes the rename itself durable; some filesystems cannot open a folder.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_private(path: Path, content: bytes) -> None:
    """Write a secret readable by its owner only (created 0600, atomically)."""
    _write(path, content, PRIVATE_FILE)


def write_public(path: Path, content: bytes) -> None:
    """Write a non-secret file (created 0644, atomically)."""
    _write(path, content, PUBLIC_FILE)


def make_private_directory(path: Path) -> None:
    """Create ``path`` and any missing parents owner-only (0700); keep what exists."""
    # Path.mkdir(parents=True) would create the parents with the default mode.
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            folder.mkdir(mode=PRIVATE_DIRECTORY, exist_ok=True)


def private_directory(path: Path) -> Path:
    """Create ``path`` owner-only, or tighten it to 0700 if it already exists; return it.

    Used for state folders (a hospital's ledger and audit log, an aggregator's
    database): an existing folder created with the default umask is tightened.
    """
    make_private_directory(path)
    if path.stat().st_mode & 0o777 != PRIVATE_DIRECTORY:
        path.chmod(PRIVATE_DIRECTORY)
    return path


def restrict_file(path: Path) -> Path:
    """Tighten an existing file to owner-only (0600), e.g. one a library created; return it."""
    if path.exists() and path.stat().st_mode & 0o777 != PRIVATE_FILE:
        path.chmod(PRIVATE_FILE)
    return path


def is_exposed(path: Path) -> bool:
    """Whether ``path`` is readable, writable or executable by group or others."""
    return bool(path.stat().st_mode & 0o077)
