"""The hash chain: each entry follows the one before, and a head recorded elsewhere pins it.

:func:`chain_entry` builds the entry that follows the last one (``seq`` plus
one, ``prev`` the last one's ``hash``); :func:`verify_chain` walks a log's lines
and says where the chain first breaks. A head (``SEQ:HASH``, :func:`format_head`)
recorded where the log's writer cannot reach it is what shows deleted last
entries or a chain rewritten with fresh hashes, which the chain alone cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from fedcare.shared.audit.entries import (
    GENESIS_HASH,
    AuditEntry,
    InvalidLine,
    JsonValue,
    entry_hash,
    is_hash,
    parse_line,
    sorted_keys,
)
from fedcare.shared.errors import FedcareError

_ANCHOR_CHANGED = (
    "entry seq {seq} differs from the recorded head: the log was rewritten at or before it"
)


class AuditHeadError(FedcareError, ValueError):
    """A recorded head is not of the form ``SEQ:HASH`` (a count and 64 hex digits)."""


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
    if not seq.isdigit() or not is_hash(digest):
        raise AuditHeadError(
            f"audit head {text!r} is not SEQ:HASH; copy it as recorded, e.g. '12:' "
            "followed by the 64 hex digits of the entry's hash"
        )
    return int(seq), digest


def chain_entry(
    last: AuditEntry | None, actor: str, event: str, fields: dict[str, JsonValue]
) -> AuditEntry:
    """Return the entry that follows ``last`` (``None``: the first), stamped with the time now.

    Parameters
    ----------
    last : AuditEntry or None
        The log's last entry, ``None`` for an empty log.
    actor : str
        Who writes it.
    event : str
        An :class:`shared.audit.AuditEvent` value, already checked.
    fields : dict
        The event's details, already checked to be JSON.

    Returns
    -------
    AuditEntry
        ``seq`` one past ``last``'s, ``prev`` its ``hash``, and its own ``hash``.
    """
    seq, prev = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    body: dict[str, JsonValue] = {
        "seq": seq + 1,
        "time": _utc_now(),
        "actor": actor,
        "event": event,
        "fields": sorted_keys(fields),
        "prev": prev,
    }
    return AuditEntry(**body, hash=entry_hash(body))  # type: ignore[arg-type]


def verify_chain(lines: Iterable[bytes], anchor: tuple[int, str] | None) -> AuditVerification:
    """Check that every line chains onto the one before, and onto ``anchor`` if given.

    Parameters
    ----------
    lines : Iterable[bytes]
        The log's lines, each with its newline, in file order.
    anchor : tuple of (int, str) or None
        A head recorded earlier, already checked (:func:`checked_anchor`): the
        chain must still hold that entry unchanged.

    Returns
    -------
    AuditVerification
        ``ok`` and the entry count, or where the chain first breaks and why.
    """
    seq, digest = 0, GENESIS_HASH
    for line, raw in enumerate(lines, start=1):
        try:
            entry = _next_link(raw, seq, digest)
        except InvalidLine as problem:
            return _broken(seq, digest, line, str(problem))
        if anchor and entry.seq == anchor[0] and entry.hash != anchor[1]:
            return _broken(seq, digest, line, _ANCHOR_CHANGED.format(seq=entry.seq))
        seq, digest = entry.seq, entry.hash
    if anchor and seq < anchor[0]:
        missing = anchor[0] - seq
        reason = f"the log ends at seq {seq} but the recorded head is seq {anchor[0]}: "
        return _broken(seq, digest, None, reason + f"the last {missing} entries were removed")
    return AuditVerification(True, seq, None, None, None, (seq, digest))


def checked_anchor(head: tuple[int, str] | None) -> tuple[int, str] | None:
    """Return ``head`` once it is a ``(seq >= 0, 64 hex digits)`` pair; ``None`` stays ``None``.

    Raises
    ------
    AuditHeadError
        If it is of any other form.
    """
    if head is None:
        return None
    if not isinstance(head, tuple) or len(head) != 2:
        raise AuditHeadError(f"expected_head {head!r} must be a (seq, hash) pair")
    seq, digest = head
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not is_hash(digest):
        raise AuditHeadError(f"expected_head {head!r} must be (seq >= 0, 64 lowercase hex digits)")
    return head


def _next_link(raw: bytes, seq: int, digest: str) -> AuditEntry:
    """Parse ``raw`` as the entry after ``(seq, digest)``; raise :class:`InvalidLine` if not."""
    entry = parse_line(raw)
    if entry.seq > seq + 1:
        raise InvalidLine(
            f"expected seq {seq + 1} but found seq {entry.seq}: entries were deleted or reordered"
        )
    if entry.seq <= seq:
        raise InvalidLine(
            f"expected seq {seq + 1} but found seq {entry.seq}: an entry was inserted, "
            "duplicated or reordered"
        )
    if entry.prev != digest:
        raise InvalidLine(
            f"prev does not match the hash of entry seq {seq}: an entry before it was "
            "replaced, or this one was forged"
        )
    return entry


def _broken(seq: int, digest: str, line: int | None, reason: str) -> AuditVerification:
    return AuditVerification(False, seq, seq + 1, line, reason, (seq, digest))


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
