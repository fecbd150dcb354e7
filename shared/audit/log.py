"""Write an audit log through :class:`AuditLog`, and check one with :func:`verify_audit_log`.

Appending checks only the last entry (and refuses to chain onto a cut-off or
garbled one); run :func:`verify_audit_log` to check the whole chain. A line cut
off by a crash can be set aside on opening (``repair_truncated_tail``), which
the log then records; a garbled one is never repaired.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from fedcare.shared.audit.chain import AuditVerification, chain_entry, checked_anchor, verify_chain
from fedcare.shared.audit.entries import (
    GENESIS_HASH,
    AuditEntry,
    AuditEntryError,
    AuditEvent,
    InvalidLine,
    JsonValue,
    check_value,
    known_event,
    parse_line,
)
from fedcare.shared.audit.log_file import (
    Tail,
    append_line,
    count_newlines,
    fsync_folder,
    locked,
    read_tail,
    write_new_file,
)
from fedcare.shared.errors import FedcareError

_REPAIR_REMEDY = (
    "nothing was written after it; open the log with repair_truncated_tail=True to move "
    "the cut-off line into '<log>.corrupt-<time>' and record a log-repaired entry"
)
_INVESTIGATE_REMEDY = (
    "fedcare writes nothing after an entry it cannot verify; run "
    "'fedcare hospital audit verify' (or 'fedcare aggregator audit verify') and investigate"
)


class AuditLogCorruptError(FedcareError, RuntimeError):
    """The log's last line is cut off or garbled, so its chain cannot be continued.

    Parameters
    ----------
    path : Path
        The audit log.
    line : int
        1-based number of the offending line.
    reason : str
        What is wrong with that line.
    remedy : str
        What the operator can do about it.
    """

    def __init__(self, path: Path, line: int, reason: str, remedy: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"audit log {path}, line {line}: {reason}; {remedy}")


class AuditLog:
    """An append-only, hash-chained JSON-lines audit log, safe to share between processes.

    Parameters
    ----------
    path : Path
        The log file; created (empty) if missing, its folder must exist.
    actor : str
        Who writes the entries: the hospital's name or the aggregator's.
    repair_truncated_tail : bool
        If the last line was cut off by a crash, move it into
        ``<path>.corrupt-<time>`` and record a ``log-repaired`` entry instead of
        refusing. Only a line without its newline is repaired, never a garbled one.

    Raises
    ------
    AuditLogCorruptError
        The last line is cut off (and no repair was asked for) or garbled.
    AuditLogAccessError
        The file cannot be opened for appending.
    """

    def __init__(self, path: Path, *, actor: str, repair_truncated_tail: bool = False) -> None:
        if not isinstance(actor, str) or not actor.strip():
            raise AuditEntryError(
                f"audit actor {actor!r} must be a non-empty string, e.g. the hospital's name"
            )
        self.path = Path(path)
        self.actor = actor
        created = not self.path.exists()
        with locked(self.path, write=True) as fd:
            if created:
                fsync_folder(self.path)
            tail = read_tail(fd)
            if repair_truncated_tail and tail.partial:
                self._repair(fd, tail)
            else:
                _last_entry(self.path, fd, tail)

    def append(self, event: AuditEvent | str, **fields: JsonValue) -> AuditEntry:
        """Chain one entry onto the log and flush it to disk before returning.

        Parameters
        ----------
        event : AuditEvent or str
            An :class:`AuditEvent` (or its value).
        **fields : JsonValue
            The event's details: str, int, float (finite), bool, None, or lists and
            str-keyed dicts of them. Never patient values.

        Returns
        -------
        AuditEntry
            The entry as written.

        Raises
        ------
        AuditEntryError
            ``event`` is unknown or a field is not JSON; nothing was written.
        AuditLogCorruptError
            The last line is cut off or garbled; nothing was written.
        AuditLogAccessError
            The write failed (e.g. a full disk); the partial line was removed if possible.
        """
        name = known_event(event)
        for key, value in fields.items():
            check_value(key, value)
        with locked(self.path, write=True) as fd:
            return self._write(fd, _last_entry(self.path, fd, read_tail(fd)), name, fields)

    def head(self) -> tuple[int, str]:
        """Return ``(seq, hash)`` of the last entry, ``(0, GENESIS_HASH)`` for an empty log.

        Record it outside the log (see :func:`format_head`): it is what lets
        :func:`verify_audit_log` detect deleted last entries or a rewritten chain.

        Raises
        ------
        AuditLogCorruptError
            The last line is cut off or garbled.
        """
        with locked(self.path, write=False) as fd:
            last = _last_entry(self.path, fd, read_tail(fd))
        return (last.seq, last.hash) if last else (0, GENESIS_HASH)

    def _write(
        self, fd: int, last: AuditEntry | None, event: str, fields: dict[str, JsonValue]
    ) -> AuditEntry:
        entry = chain_entry(last, self.actor, event, fields)
        append_line(self.path, fd, entry.to_line())
        return entry

    def _repair(self, fd: int, tail: Tail) -> None:
        line = count_newlines(fd, tail.partial_start) + 1
        # The entry before the cut-off line must itself be sound, or there is nothing to chain to.
        last = _last_entry(self.path, fd, Tail(tail.last_line, b"", tail.partial_start))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        write_new_file(aside, tail.partial)
        os.ftruncate(fd, tail.partial_start)
        os.fsync(fd)
        fields: dict[str, JsonValue] = {
            "line": line,
            "bytes": len(tail.partial),
            "moved-to": aside.name,
            "sha256": hashlib.sha256(tail.partial).hexdigest(),
        }
        self._write(fd, last, AuditEvent.LOG_REPAIRED.value, fields)


def _last_entry(path: Path, fd: int, tail: Tail) -> AuditEntry | None:
    """Return the entry to chain onto, or raise :class:`AuditLogCorruptError`."""
    if tail.partial:
        line = count_newlines(fd, tail.partial_start) + 1
        reason = "the last line is cut off (no newline at its end): a write was interrupted"
        raise AuditLogCorruptError(path, line, reason, _REPAIR_REMEDY)
    if tail.last_line is None:
        return None
    try:
        return parse_line(tail.last_line)
    except InvalidLine as problem:
        line = count_newlines(fd, tail.partial_start)
        raise AuditLogCorruptError(path, line, str(problem), _INVESTIGATE_REMEDY) from None


def verify_audit_log(
    path: Path, *, expected_head: tuple[int, str] | None = None
) -> AuditVerification:
    """Check that every line of an audit log chains onto the one before.

    Parameters
    ----------
    path : Path
        The audit log.
    expected_head : tuple of (int, str), optional
        A head recorded earlier (:meth:`AuditLog.head`). The log must still contain
        that entry unchanged; this is what detects deleted last entries and a chain
        rewritten with fresh hashes, which the chain alone cannot.

    Returns
    -------
    AuditVerification
        ``ok`` and the entry count, or where the chain first breaks and why.

    Raises
    ------
    AuditLogAccessError
        The file cannot be read (missing, a folder, no permission).
    AuditHeadError
        ``expected_head`` is not ``(seq >= 0, 64 hex digits)``.
    """
    anchor = checked_anchor(expected_head)
    with locked(Path(path), write=False) as fd, open(fd, "rb", closefd=False) as stream:
        return verify_chain(stream, anchor)


def read_audit_log(path: Path) -> Iterator[AuditEntry]:
    """Yield the entries of an audit log in order, stopping before the first unsound line.

    For reports (``fedcare hospital runs``); :func:`verify_audit_log` says
    whether, and where, the chain is broken.

    Raises
    ------
    AuditLogAccessError
        The file cannot be read.
    """
    with locked(Path(path), write=False) as fd, open(fd, "rb", closefd=False) as stream:
        for raw in stream:
            try:
                yield parse_line(raw)
            except InvalidLine:
                return
