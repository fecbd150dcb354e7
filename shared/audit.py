"""Append-only, hash-chained audit log kept by each hospital and by the aggregator.

Every line of the log is one JSON object, an :class:`AuditEntry`::

    {"seq":1,"time":"2025-01-01T12:00:00.000000Z","actor":"hospital-a",
     "event":"instruction-received","fields":{"round":1},"prev":"000...000","hash":"3f..."}

``hash`` is the SHA-256 of the canonical JSON (:func:`canonical_json`) of the entry
without ``hash``; ``prev`` is the previous entry's ``hash``, 64 zeros for the first.
``seq`` counts from 1, so in an intact log entry ``seq`` sits on line ``seq``.

What the chain shows, and what it cannot
----------------------------------------
:func:`verify_audit_log` finds an edited entry, a deleted, reordered or inserted one,
a reformatted line and a cut-off or garbled line, and names the first broken entry.

The chain holds no secret, so it is tamper-*evident* only against a head recorded
elsewhere. Anyone who can write the file can delete its last entries, or change an
entry and recompute every hash after it, and the chain alone still verifies. Both
change the head: record :meth:`AuditLog.head` where the log's writer cannot reach
it (a run report, a ticket, the other side of the federation) and pass it back as
``expected_head`` to :func:`verify_audit_log`.

Times are recorded, not checked (clocks may step back). Appending checks only the
last entry; run :func:`verify_audit_log` to check the whole chain. Processes take
turns through :func:`fcntl.flock`, which is advisory and unreliable on network file
systems: keep the log on a local disk and write it only through :class:`AuditLog`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from fedcare.shared.errors import FedcareError

JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"

GENESIS_HASH = "0" * 64
"""The ``prev`` of the first entry, and the head hash of an empty log."""

_KEYS = ("seq", "time", "actor", "event", "fields", "prev", "hash")
_HEX = frozenset("0123456789abcdef")
_TAIL_CHUNK = 64 * 1024
_REPAIR_REMEDY = (
    "nothing was written after it; open the log with repair_truncated_tail=True to move "
    "the cut-off line into '<log>.corrupt-<time>' and record a log-repaired entry"
)
_INVESTIGATE_REMEDY = (
    "fedcare writes nothing after an entry it cannot verify; run "
    "'fedcare hospital audit verify' (or 'fedcare aggregator audit verify') and investigate"
)
_ANCHOR_CHANGED = (
    "entry seq {seq} differs from the recorded head: the log was rewritten at or before it"
)


class AuditEvent(StrEnum):
    """What an audit entry records.

    Hospitals write the first four, the aggregator the last five; both may write
    ``log-repaired``.
    """

    INSTRUCTION_RECEIVED = "instruction-received"
    UPDATE_RELEASED = "update-released"
    ROUND_REFUSED = "round-refused"
    EGRESS_BLOCKED = "egress-blocked"
    LOG_REPAIRED = "log-repaired"
    RUN_STARTED = "run-started"
    RUN_RESUMED = "run-resumed"
    UPDATE_RECEIVED = "update-received"
    UPDATE_REJECTED = "update-rejected"
    AGGREGATE_COMPUTED = "aggregate-computed"


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


class AuditEntryError(FedcareError, ValueError):
    """An entry cannot be written as asked: unknown event, bad actor or non-JSON field."""


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


class AuditHeadError(FedcareError, ValueError):
    """A recorded head is not of the form ``SEQ:HASH`` (a count and 64 hex digits)."""


@dataclass(frozen=True)
class AuditEntry:
    """One line of an audit log.

    Attributes
    ----------
    seq : int
        Position in the chain, from 1.
    time : str
        When it was written, ISO-8601 in UTC (recorded, never checked).
    actor : str
        Who wrote it: a hospital's name or the aggregator's.
    event : str
        An :class:`AuditEvent` value.
    fields : dict
        The event's details: JSON scalars, lists and str-keyed dicts of them.
    prev : str
        ``hash`` of the previous entry, :data:`GENESIS_HASH` for the first.
    hash : str
        SHA-256 (hex) of the canonical JSON of every other attribute.
    """

    seq: int
    time: str
    actor: str
    event: str
    fields: dict[str, JsonValue]
    prev: str
    hash: str

    def body(self) -> dict[str, JsonValue]:
        """Return the entry without ``hash``: what ``hash`` is computed over."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "event": self.event,
            "fields": self.fields,
            "prev": self.prev,
        }

    def to_line(self) -> bytes:
        """Return the entry's one line, exactly as the log stores it (keys in fixed order)."""
        record = {**self.body(), "fields": _sorted_keys(self.fields), "hash": self.hash}
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class AuditVerification:
    """The verdict of :func:`verify_audit_log`.

    Attributes
    ----------
    ok : bool
        Whether every line chains onto the one before (and onto ``expected_head``).
    entries : int
        How many entries verified: all of them when ``ok``, those before the break if not.
    first_broken_seq : int or None
        The ``seq`` the chain expected where it broke (the entries verified plus one).
    first_broken_line : int or None
        The 1-based line where it broke; None when entries are missing from the end.
    reason : str or None
        What is wrong there, in one sentence.
    head : tuple of (int, str)
        ``(seq, hash)`` of the last entry that verified; ``(0, GENESIS_HASH)`` if none.
    """

    ok: bool
    entries: int
    first_broken_seq: int | None
    first_broken_line: int | None
    reason: str | None
    head: tuple[int, str] = (0, GENESIS_HASH)


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
        with _locked(self.path, write=True) as fd:
            if created:
                _fsync_folder(self.path)
            tail = _read_tail(fd)
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
        name = _known_event(event)
        for key, value in fields.items():
            _check_value(key, value)
        with _locked(self.path, write=True) as fd:
            return self._write(fd, _last_entry(self.path, fd, _read_tail(fd)), name, fields)

    def head(self) -> tuple[int, str]:
        """Return ``(seq, hash)`` of the last entry, ``(0, GENESIS_HASH)`` for an empty log.

        Record it outside the log (see :func:`format_head`): it is what lets
        :func:`verify_audit_log` detect deleted last entries or a rewritten chain.

        Raises
        ------
        AuditLogCorruptError
            The last line is cut off or garbled.
        """
        with _locked(self.path, write=False) as fd:
            last = _last_entry(self.path, fd, _read_tail(fd))
        return (last.seq, last.hash) if last else (0, GENESIS_HASH)

    def _write(
        self, fd: int, last: AuditEntry | None, event: str, fields: dict[str, JsonValue]
    ) -> AuditEntry:
        seq, prev = (last.seq, last.hash) if last else (0, GENESIS_HASH)
        body: dict[str, JsonValue] = {
            "seq": seq + 1,
            "time": _utc_now(),
            "actor": self.actor,
            "event": event,
            "fields": _sorted_keys(fields),
            "prev": prev,
        }
        entry = AuditEntry(**body, hash=entry_hash(body))  # type: ignore[arg-type]
        _append_line(self.path, fd, entry.to_line())
        return entry

    def _repair(self, fd: int, tail: _Tail) -> None:
        line = _count_newlines(fd, tail.partial_start) + 1
        # The entry before the cut-off line must itself be sound, or there is nothing to chain to.
        last = _last_entry(self.path, fd, _Tail(tail.last_line, b"", tail.partial_start))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        _write_new_file(aside, tail.partial)
        os.ftruncate(fd, tail.partial_start)
        os.fsync(fd)
        fields: dict[str, JsonValue] = {
            "line": line,
            "bytes": len(tail.partial),
            "moved-to": aside.name,
            "sha256": hashlib.sha256(tail.partial).hexdigest(),
        }
        self._write(fd, last, AuditEvent.LOG_REPAIRED.value, fields)


def canonical_json(value: JsonValue) -> str:
    """Return the canonical JSON of ``value``: sorted keys, no spaces, UTF-8 kept as is.

    Parameters
    ----------
    value : JsonValue
        Anything :meth:`AuditLog.append` accepts.

    Returns
    -------
    str
        ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(body: dict[str, JsonValue]) -> str:
    """Return the SHA-256 (hex) of the canonical JSON of an entry without its ``hash``.

    Parameters
    ----------
    body : dict
        ``seq``, ``time``, ``actor``, ``event``, ``fields`` and ``prev``.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def format_head(head: tuple[int, str]) -> str:
    """Return ``head`` as ``SEQ:HASH``, the form ``fedcare ... audit verify --head`` takes.

    Parameters
    ----------
    head : tuple of (int, str)
        As returned by :meth:`AuditLog.head`.

    Returns
    -------
    str
        e.g. ``"12:3fa9...e01"``.
    """
    seq, digest = head
    return f"{seq}:{digest}"


def parse_head(text: str) -> tuple[int, str]:
    """Parse a head recorded as ``SEQ:HASH``.

    Parameters
    ----------
    text : str
        A count >= 0, a colon and 64 hex digits.

    Returns
    -------
    tuple of (int, str)
        ``(seq, hash)`` with the hash in lowercase.

    Raises
    ------
    AuditHeadError
        ``text`` is not of that form.
    """
    seq, _, digest = text.strip().partition(":")
    digest = digest.lower()
    if not seq.isdigit() or not _is_hash(digest):
        raise AuditHeadError(
            f"audit head {text!r} is not SEQ:HASH; copy it as recorded, e.g. '12:' "
            "followed by the 64 hex digits of the entry's hash"
        )
    return int(seq), digest


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
    anchor = _checked_anchor(expected_head)
    seq, digest = 0, GENESIS_HASH
    with _locked(Path(path), write=False) as fd, open(fd, "rb", closefd=False) as stream:
        for line, raw in enumerate(stream, start=1):
            try:
                entry = _next_link(raw, seq, digest)
            except _InvalidLine as problem:
                return _broken(seq, digest, line, str(problem))
            if anchor and entry.seq == anchor[0] and entry.hash != anchor[1]:
                return _broken(seq, digest, line, _ANCHOR_CHANGED.format(seq=entry.seq))
            seq, digest = entry.seq, entry.hash
    if anchor and seq < anchor[0]:
        missing = anchor[0] - seq
        reason = f"the log ends at seq {seq} but the recorded head is seq {anchor[0]}: "
        return _broken(seq, digest, None, reason + f"the last {missing} entries were removed")
    return AuditVerification(True, seq, None, None, None, (seq, digest))


class _InvalidLine(Exception):
    """Why one line is not the entry the chain expects (internal; becomes a verdict)."""


@dataclass(frozen=True)
class _Tail:
    """The end of a log file, read without reading the rest."""

    last_line: bytes | None  # the last complete line with its newline; None if there is none
    partial: bytes  # bytes after the last newline: a write that was cut off
    partial_start: int  # file offset of ``partial``, i.e. the end of the sound part


def _broken(seq: int, digest: str, line: int | None, reason: str) -> AuditVerification:
    return AuditVerification(False, seq, seq + 1, line, reason, (seq, digest))


def _checked_anchor(head: tuple[int, str] | None) -> tuple[int, str] | None:
    if head is None:
        return None
    if not isinstance(head, tuple) or len(head) != 2:
        raise AuditHeadError(f"expected_head {head!r} must be a (seq, hash) pair")
    seq, digest = head
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not _is_hash(digest):
        raise AuditHeadError(f"expected_head {head!r} must be (seq >= 0, 64 lowercase hex digits)")
    return head


def _next_link(raw: bytes, seq: int, digest: str) -> AuditEntry:
    """Parse ``raw`` as the entry after ``(seq, digest)``; raise :class:`_InvalidLine` if not."""
    entry = _parse_line(raw)
    if entry.seq > seq + 1:
        raise _InvalidLine(
            f"expected seq {seq + 1} but found seq {entry.seq}: entries were deleted or reordered"
        )
    if entry.seq <= seq:
        raise _InvalidLine(
            f"expected seq {seq + 1} but found seq {entry.seq}: an entry was inserted, "
            "duplicated or reordered"
        )
    if entry.prev != digest:
        raise _InvalidLine(
            f"prev does not match the hash of entry seq {seq}: an entry before it was "
            "replaced, or this one was forged"
        )
    return entry


def _parse_line(raw: bytes) -> AuditEntry:
    """Return the sound entry on ``raw``, or raise :class:`_InvalidLine` saying why not."""
    if not raw.endswith(b"\n"):
        raise _InvalidLine("the line is cut off (no newline at its end): a write was interrupted")
    try:
        record = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise _InvalidLine(f"not a valid JSON entry ({error})") from None
    entry = _entry_from_record(record)
    if entry.hash != entry_hash(entry.body()):
        raise _InvalidLine("its hash does not match its content: the entry was edited")
    if entry.to_line() != raw:
        raise _InvalidLine("not written as fedcare writes it: the line was reformatted or edited")
    return entry


def _entry_from_record(record: object) -> AuditEntry:
    if not isinstance(record, dict) or sorted(record) != sorted(_KEYS):
        raise _InvalidLine(f"not an audit entry: it must be a JSON object with keys {_KEYS}")
    seq = record["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise _InvalidLine(f"seq {seq!r} is not a count from 1")
    texts = all(isinstance(record[key], str) for key in ("time", "actor", "event"))
    if not texts or not isinstance(record["fields"], dict):
        raise _InvalidLine("time, actor and event must be strings and fields an object")
    if not (_is_hash(record["prev"]) and _is_hash(record["hash"])):
        raise _InvalidLine("prev and hash must be 64 lowercase hex digits")
    return AuditEntry(**record)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Readers disagree on which duplicate wins; a line must mean one thing to all of them.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {sorted(keys)}")
    return dict(pairs)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _known_event(event: AuditEvent | str) -> str:
    try:
        return AuditEvent(event).value
    except ValueError:
        known = ", ".join(member.value for member in AuditEvent)
        raise AuditEntryError(
            f"unknown audit event {event!r}; use one of {known} (add new ones to AuditEvent)"
        ) from None


def _check_value(name: str, value: object) -> None:
    """Raise :class:`AuditEntryError` unless ``value`` is JSON that reads back as written."""
    if isinstance(value, float) and not math.isfinite(value):
        raise AuditEntryError(
            f"audit field '{name}' is {value}, which JSON cannot hold; record it as a string"
        )
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(f"{name}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditEntryError(f"audit field '{name}' has key {key!r}; keys must be str")
            _check_value(f"{name}.{key}", item)
        return
    raise AuditEntryError(
        f"audit field '{name}' is a {type(value).__name__}, not JSON; pass str, int, float, "
        "bool, None, or lists and str-keyed dicts of them (numpy values: use .item() or .tolist())"
    )


def _sorted_keys(value: JsonValue) -> JsonValue:
    # Canonical order inside ``fields`` makes a line's bytes a function of its content.
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@contextlib.contextmanager
def _locked(path: Path, *, write: bool) -> Iterator[int]:
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


def _read_tail(fd: int) -> _Tail:
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
    return _Tail(complete[line_start:] or None, buffer[cut:], start + cut)


def _last_entry(path: Path, fd: int, tail: _Tail) -> AuditEntry | None:
    """Return the entry to chain onto, or raise :class:`AuditLogCorruptError`."""
    if tail.partial:
        line = _count_newlines(fd, tail.partial_start) + 1
        reason = "the last line is cut off (no newline at its end): a write was interrupted"
        raise AuditLogCorruptError(path, line, reason, _REPAIR_REMEDY)
    if tail.last_line is None:
        return None
    try:
        return _parse_line(tail.last_line)
    except _InvalidLine as problem:
        line = _count_newlines(fd, tail.partial_start)
        raise AuditLogCorruptError(path, line, str(problem), _INVESTIGATE_REMEDY) from None


def _count_newlines(fd: int, end: int) -> int:
    # Only on the error path: naming the line is worth one pass over the file.
    count, offset = 0, 0
    while offset < end:
        chunk = os.pread(fd, min(1 << 20, end - offset), offset)
        if not chunk:
            break
        count += chunk.count(b"\n")
        offset += len(chunk)
    return count


def _append_line(path: Path, fd: int, line: bytes) -> None:
    """Write ``line`` at the end and fsync; on failure, cut the half-written line off again."""
    size = os.fstat(fd).st_size
    try:
        _write_all(fd, line)
    except OSError as error:
        # A half line would block every later append until someone repairs the log.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise AuditLogAccessError(path, "append to", error) from None


def _write_new_file(path: Path, content: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, content)
        finally:
            os.close(fd)
        _fsync_folder(path)
    except OSError as error:
        raise AuditLogAccessError(path, "create", error) from None


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:  # os.write may write less than asked
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _fsync_folder(path: Path) -> None:
    # A new file's name is durable only once its folder is flushed too.
    fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
