"""One entry of an audit log: its events, its canonical JSON and hash, and reading it back.

An entry is one line of JSON (:meth:`AuditEntry.to_line`); its ``hash`` is the
SHA-256 of the canonical JSON (:func:`canonical_json`) of the entry without
``hash``. Reading a line back (:func:`parse_line`) accepts it only if it is
exactly what fedcare writes: a reformatted or edited line is refused, not
reinterpreted.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from fedcare.shared.errors import FedcareError

JsonValue: TypeAlias = (
    "None | bool | int | float | str | Sequence[JsonValue] | Mapping[str, JsonValue]"
)
"""A value an entry holds: what ``json`` writes, from the lists and dicts callers pass.

The containers are typed read-only (``Sequence``, ``Mapping``) so that a ``list[str]``
or a run's flat ``dict[str, FlatValue]`` fits without a copy.
"""

GENESIS_HASH = "0" * 64
"""The ``prev`` of the first entry, and the head hash of an empty log."""

_KEYS = ("seq", "time", "actor", "event", "fields", "prev", "hash")
_HEX = frozenset("0123456789abcdef")


class AuditEvent(StrEnum):
    """What an audit entry records.

    Hospitals write the first six, the aggregator the last five; both may write
    ``log-repaired``.
    """

    INSTRUCTION_RECEIVED = "instruction-received"
    UPDATE_RELEASED = "update-released"
    ROUND_REFUSED = "round-refused"
    EGRESS_BLOCKED = "egress-blocked"
    RUN_ADMITTED = "run-admitted"
    RUN_REFUSED = "run-refused"
    LOG_REPAIRED = "log-repaired"
    RUN_STARTED = "run-started"
    RUN_RESUMED = "run-resumed"
    UPDATE_RECEIVED = "update-received"
    UPDATE_REJECTED = "update-rejected"
    AGGREGATE_COMPUTED = "aggregate-computed"


class AuditEntryError(FedcareError, ValueError):
    """An entry cannot be written as asked: unknown event, bad actor or non-JSON field."""


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
        record = {**self.body(), "fields": sorted_keys(self.fields), "hash": self.hash}
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


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


class InvalidLine(Exception):
    """Why one line is not the entry the chain expects (internal; becomes a verdict)."""


def parse_line(raw: bytes) -> AuditEntry:
    """Return the sound entry on ``raw``, or raise :class:`InvalidLine` saying why not."""
    if not raw.endswith(b"\n"):
        raise InvalidLine("the line is cut off (no newline at its end): a write was interrupted")
    try:
        record = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidLine(f"not a valid JSON entry ({error})") from None
    entry = _entry_from_record(record)
    if entry.hash != entry_hash(entry.body()):
        raise InvalidLine("its hash does not match its content: the entry was edited")
    if entry.to_line() != raw:
        raise InvalidLine("not written as fedcare writes it: the line was reformatted or edited")
    return entry


def _entry_from_record(record: object) -> AuditEntry:
    if not isinstance(record, dict) or sorted(record) != sorted(_KEYS):
        raise InvalidLine(f"not an audit entry: it must be a JSON object with keys {_KEYS}")
    seq = record["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise InvalidLine(f"seq {seq!r} is not a count from 1")
    texts = all(isinstance(record[key], str) for key in ("time", "actor", "event"))
    if not texts or not isinstance(record["fields"], dict):
        raise InvalidLine("time, actor and event must be strings and fields an object")
    if not (is_hash(record["prev"]) and is_hash(record["hash"])):
        raise InvalidLine("prev and hash must be 64 lowercase hex digits")
    return AuditEntry(**record)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Readers disagree on which duplicate wins; a line must mean one thing to all of them.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {sorted(keys)}")
    return dict(pairs)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def is_hash(value: object) -> bool:
    """Return whether ``value`` is a hash as the log writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def known_event(event: AuditEvent | str) -> str:
    """Return ``event``'s value, or raise :class:`AuditEntryError` naming the known events."""
    try:
        return AuditEvent(event).value
    except ValueError:
        known = ", ".join(member.value for member in AuditEvent)
        raise AuditEntryError(
            f"unknown audit event {event!r}; use one of {known} (add new ones to AuditEvent)"
        ) from None


def check_value(name: str, value: object) -> None:
    """Raise :class:`AuditEntryError` unless ``value`` is JSON that reads back as written."""
    if isinstance(value, float) and not math.isfinite(value):
        raise AuditEntryError(
            f"audit field '{name}' is {value}, which JSON cannot hold; record it as a string"
        )
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_value(f"{name}[{index}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditEntryError(f"audit field '{name}' has key {key!r}; keys must be str")
            check_value(f"{name}.{key}", item)
        return
    raise AuditEntryError(
        f"audit field '{name}' is a {type(value).__name__}, not JSON; pass str, int, float, "
        "bool, None, or lists and str-keyed dicts of them (numpy values: use .item() or .tolist())"
    )


def sorted_keys(value: JsonValue) -> JsonValue:
    """Return ``value`` with every dict's keys in sorted order, at every depth."""
    # Canonical order inside ``fields`` makes a line's bytes a function of its content.
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value
