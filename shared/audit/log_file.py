"""The audit log's file: locked access, reading its tail, and appends that reach the disk.

Processes take turns through :func:`fcntl.flock`, which is advisory and
unreliable on network file systems: keep the log on a local disk and write it
only through :class:`shared.audit.AuditLog`. Every write is fsynced, and a new
file's folder too, so that an entry acknowledged is an entry kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedcare.shared.errors import FedcareError

_TAIL_CHUNK = 64 * 1024


class AuditLogAccessError(FedcareError, OSError):
    """The log cannot be opened, read or written (missing folder, permissions, full disk).

    Parameters
    ----------
    path : Path
        The audit log.
    action : str
        What fedcare tried, e.g. ``"open"`` or ``"append to"``.
    error : OSError
        The operating system's error.
    """

    def __init__(self, path: Path, action: str, error: OSError) -> None:
        self.path = path
        super().__init__(
            f"cannot {action} audit log {path}: {error.strerror or error}; check that the "
            "path exists and that this user may access it"
        )


@dataclass(frozen=True)
class Tail:
    """The end of a log file, read without reading the rest."""

    last_line: bytes | None  # the last complete line with its newline; None if there is none
    partial: bytes  # bytes after the last newline: a write that was cut off
    partial_start: int  # file offset of ``partial``, i.e. the end of the sound part


@contextlib.contextmanager
def locked(path: Path, *, write: bool) -> Iterator[int]:
    """Open ``path`` and hold an exclusive (``write``) or shared flock on it until exit."""
    flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT) if write else os.O_RDONLY
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise AuditLogAccessError(path, "open", error) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def read_tail(fd: int) -> Tail:
    """Read backwards only as far as the start of the last complete line."""
    start = os.fstat(fd).st_size
    buffer = b""
    # Two newlines bound the last complete line, whatever cut-off bytes follow it.
    while start > 0 and buffer.count(b"\n") < 2:
        step = min(_TAIL_CHUNK, start)
        start -= step
        buffer = os.pread(fd, step, start) + buffer
    cut = buffer.rfind(b"\n") + 1
    complete = buffer[:cut]
    line_start = complete.rfind(b"\n", 0, len(complete) - 1) + 1
    return Tail(complete[line_start:] or None, buffer[cut:], start + cut)


def count_newlines(fd: int, end: int) -> int:
    """Return how many lines end before offset ``end`` of the open file ``fd``."""
    # Only on the error path: naming the line is worth one pass over the file.
    count, offset = 0, 0
    while offset < end:
        chunk = os.pread(fd, min(1 << 20, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


def append_line(path: Path, fd: int, line: bytes) -> None:
    """Write ``line`` at the end and fsync; on failure, cut the half-written line off again."""
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, line)
    except OSError as error:
        # A half line would block every later append until someone repairs the log.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise AuditLogAccessError(path, "append to", error) from None


def write_new_file(path: Path, content: bytes) -> None:
    """Create ``path`` (owner-only; it must not exist) holding ``content``, durably.

    Raises
    ------
    AuditLogAccessError
        If it cannot be created or written.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, content)
        finally:
            os.close(fd)
        fsync_folder(path)
    except OSError as error:
        raise AuditLogAccessError(path, "create", error) from None


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:  # os.write may write less than asked
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def fsync_folder(path: Path) -> None:
    """Flush the folder holding ``path``, so that a new file's name survives a crash."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
