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

Where each part lives: an entry, its hash and reading it back in
:mod:`shared.audit.entries`; the chain and its verification in
:mod:`shared.audit.chain`; the locked, durable file in :mod:`shared.audit.log_file`;
:class:`AuditLog` and :func:`verify_audit_log` in :mod:`shared.audit.log`.
"""

from fedcare.shared.audit.chain import AuditHeadError, AuditVerification, format_head, parse_head
from fedcare.shared.audit.entries import (
    GENESIS_HASH,
    AuditEntry,
    AuditEntryError,
    AuditEvent,
    JsonValue,
    canonical_json,
    entry_hash,
)
from fedcare.shared.audit.log import (
    AuditLog,
    AuditLogCorruptError,
    read_audit_log,
    verify_audit_log,
)
from fedcare.shared.audit.log_file import AuditLogAccessError

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditEntryError",
    "AuditEvent",
    "AuditHeadError",
    "AuditLog",
    "AuditLogAccessError",
    "AuditLogCorruptError",
    "AuditVerification",
    "JsonValue",
    "canonical_json",
    "entry_hash",
    "format_head",
    "parse_head",
    "read_audit_log",
    "verify_audit_log",
]
