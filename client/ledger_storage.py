"""The privacy ledger's SQLite storage: its schema, transactions and integrity checks.

One table, ``releases``, holds every release; ``schema_version`` says which layout
wrote it (:data:`SCHEMA_VERSION`). A file is opened in WAL mode with
``synchronous=FULL``, so a committed entry survives a process kill and a power loss;
every write is one ``BEGIN IMMEDIATE`` transaction (:func:`write_transaction`), which
holds the database's write lock from its first read. SQLite's errors reach callers as
typed ledger errors that say what to do (:func:`translated_errors`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcare.client.ledger_records import (
    RESTORE_REMEDY,
    LedgerCorruptError,
    LedgerError,
    LedgerSchemaError,
    ReleaseStatus,
)
from fedcare.shared.privacy import ACCOUNTANT, HistoryEntry

SCHEMA_VERSION = 2
"""The ledger schema this module writes; a newer one is refused, never read.

Version 2 added each release's ``label``; a version 1 ledger (which keyed
releases on the label alone) is upgraded in place when opened."""

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's write lock before giving up."""

_SQL_JOURNAL_WAL = "PRAGMA journal_mode=WAL"
_SQL_SYNCHRONOUS_FULL = "PRAGMA synchronous=FULL"
SQL_QUICK_CHECK = "PRAGMA quick_check"
SQL_INTEGRITY_CHECK = "PRAGMA integrity_check"
_SQL_BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
_SQL_COMMIT = "COMMIT"
_SQL_ROLLBACK = "ROLLBACK"
_SQL_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
_SQL_COUNT_OBJECTS = "SELECT count(*) FROM sqlite_master"
_SQL_CREATE_SCHEMA_VERSION = """
CREATE TABLE schema_version (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    version INTEGER NOT NULL
)"""
# AUTOINCREMENT: an id, once handed out, names one release forever (ids are never reused).
_SQL_CREATE_RELEASES = """
CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id TEXT NOT NULL CHECK (length(dataset_id) > 0),
    label TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL,
    server_round INTEGER NOT NULL CHECK (server_round >= 0),
    mechanism TEXT NOT NULL,
    accountant TEXT NOT NULL,
    noise_multiplier REAL NOT NULL CHECK (noise_multiplier > 0),
    sample_rate REAL NOT NULL CHECK (sample_rate > 0 AND sample_rate <= 1),
    steps INTEGER NOT NULL CHECK (steps > 0),
    delta REAL NOT NULL CHECK (delta > 0 AND delta < 1),
    epsilon_after REAL NOT NULL CHECK (epsilon_after >= 0),
    status TEXT NOT NULL CHECK (status IN ('reserved', 'released')),
    recorded_at TEXT NOT NULL
)"""
_SQL_CREATE_INDEX = "CREATE INDEX releases_by_dataset ON releases (dataset_id, id)"
_SQL_CREATE_LABEL_INDEX = "CREATE INDEX releases_by_label ON releases (label, id)"
_SQL_ADD_LABEL = "ALTER TABLE releases ADD COLUMN label TEXT NOT NULL DEFAULT ''"
# Version 1 keyed a dataset on the hospital's label: that key becomes the label.
_SQL_LABEL_FROM_KEY = "UPDATE releases SET label = dataset_id"
_SQL_UPDATE_VERSION = "UPDATE schema_version SET version = ? WHERE singleton = 1"
_SQL_READ_VERSION = "SELECT version FROM schema_version WHERE singleton = 1"
_SQL_WRITE_VERSION = "INSERT INTO schema_version (singleton, version) VALUES (1, ?)"
SQL_INSERT_RELEASE = """
INSERT INTO releases (dataset_id, label, run_id, server_round, mechanism, accountant,
                      noise_multiplier, sample_rate, steps, delta, epsilon_after,
                      status, recorded_at)
VALUES (:dataset_id, :label, :run_id, :server_round, :mechanism, :accountant,
        :noise_multiplier, :sample_rate, :steps, :delta, :epsilon_after,
        :status, :recorded_at)"""
_ENTRY_COLUMNS = (
    "id, dataset_id, run_id, server_round, mechanism, accountant, noise_multiplier, "
    "sample_rate, steps, delta, epsilon_after, status, recorded_at, label"
)
# A dataset's releases: those of its fingerprint, and those of its label (when it has one).
_SQL_SAME_DATASET = "(dataset_id = :dataset_id OR (:label <> '' AND label = :label))"
SQL_DATASET_ENTRIES = f"SELECT {_ENTRY_COLUMNS} FROM releases WHERE {_SQL_SAME_DATASET} ORDER BY id"
SQL_ALL_ENTRIES = f"SELECT {_ENTRY_COLUMNS} FROM releases ORDER BY dataset_id, id"
_SQL_DATASET_HISTORY = (
    "SELECT id, noise_multiplier, sample_rate, steps FROM releases "
    f"WHERE {_SQL_SAME_DATASET} ORDER BY id"
)
SQL_CONFIRM = "UPDATE releases SET status = ? WHERE id = ?"


@contextmanager
def translated_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's errors into typed ledger errors that say what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise LedgerCorruptError(
                f"privacy ledger {path} is corrupt or not a database ({exc}). {RESTORE_REMEDY}"
            ) from exc
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise LedgerError(
                f"privacy ledger {path} stayed locked by another process for over "
                f"{BUSY_TIMEOUT_S:g} s; retry, or stop the process that holds it"
            ) from exc
        raise LedgerError(
            f"privacy ledger {path}: {exc}; check the file's permissions and the free disk space"
        ) from exc


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that holds the write lock from its first read."""
    conn.execute(_SQL_BEGIN_IMMEDIATE)
    try:
        yield conn
        conn.execute(_SQL_COMMIT)
    finally:
        if conn.in_transaction:
            conn.execute(_SQL_ROLLBACK)


def configure(conn: sqlite3.Connection, path: Path) -> None:
    """Make every commit durable: write-ahead logging, fsynced on each commit."""
    mode = str(conn.execute(_SQL_JOURNAL_WAL).fetchone()[0]).lower()
    if mode != "wal":
        raise LedgerError(
            f"privacy ledger {path} cannot use write-ahead logging (journal mode {mode!r}); "
            "keep it on a local disk"
        )
    # FULL: every commit is fsynced, so a returned reservation survives a power loss.
    conn.execute(_SQL_SYNCHRONOUS_FULL)


def raise_unless_ok(problems: Sequence[Sequence[Any]], path: Path) -> None:
    """Raise :class:`LedgerCorruptError` unless SQLite's check (quick or full) said ``ok``."""
    messages = [str(row[0]) for row in problems]
    if messages != ["ok"]:
        raise LedgerCorruptError(
            f"privacy ledger {path} failed SQLite's integrity check: "
            f"{'; '.join(messages[:3])}. {RESTORE_REMEDY}"
        )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, upgrade an older one, or check its version."""
    with write_transaction(conn):
        if conn.execute(_SQL_TABLE_EXISTS, ("schema_version",)).fetchone() is None:
            _create_schema(conn, path)
            return
        row = conn.execute(_SQL_READ_VERSION).fetchone()
        if row is not None and row[0] == 1:
            conn.execute(_SQL_ADD_LABEL)
            conn.execute(_SQL_LABEL_FROM_KEY)
            conn.execute(_SQL_CREATE_LABEL_INDEX)
            conn.execute(_SQL_UPDATE_VERSION, (SCHEMA_VERSION,))
    check_version(conn, path)


def _create_schema(conn: sqlite3.Connection, path: Path) -> None:
    if conn.execute(_SQL_COUNT_OBJECTS).fetchone()[0] != 0:
        raise LedgerError(
            f"{path} is an SQLite database but not a fedcare privacy ledger; "
            "choose another ledger path"
        )
    conn.execute(_SQL_CREATE_SCHEMA_VERSION)
    conn.execute(_SQL_CREATE_RELEASES)
    conn.execute(_SQL_CREATE_INDEX)
    conn.execute(_SQL_CREATE_LABEL_INDEX)
    conn.execute(_SQL_WRITE_VERSION, (SCHEMA_VERSION,))


def check_version(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a ledger with no schema version, or one newer than :data:`SCHEMA_VERSION`."""
    row = conn.execute(_SQL_READ_VERSION).fetchone()
    if row is None or not isinstance(row[0], int):
        raise LedgerCorruptError(f"privacy ledger {path} has no schema version. {RESTORE_REMEDY}")
    if row[0] > SCHEMA_VERSION:
        raise LedgerSchemaError(
            f"privacy ledger {path} has schema version {row[0]}, newer than the version "
            f"{SCHEMA_VERSION} this fedcare reads; upgrade fedcare on this node "
            "(never downgrade or edit the ledger)"
        )


def dataset_snapshot(
    conn: sqlite3.Connection, dataset_id: str, label: str
) -> list[tuple[int, HistoryEntry]]:
    """Read the dataset's entries, with their ids so that two snapshots can be compared."""
    rows = conn.execute(_SQL_DATASET_HISTORY, {"dataset_id": dataset_id, "label": label}).fetchall()
    return [(int(i), (float(noise), float(rate), int(steps))) for i, noise, rate, steps in rows]


def insert_params(
    identity: dict[str, str | int], release: HistoryEntry, delta: float, epsilon_after: float
) -> dict[str, str | int | float]:
    """Return the new row of a release, reserved now, for :data:`SQL_INSERT_RELEASE`."""
    noise, rate, steps = release
    return {
        **identity,
        "accountant": ACCOUNTANT,
        "noise_multiplier": noise,
        "sample_rate": rate,
        "steps": steps,
        "delta": float(delta),
        "epsilon_after": epsilon_after,
        "status": ReleaseStatus.RESERVED.value,
        "recorded_at": datetime.now(UTC).isoformat(timespec="microseconds"),
    }
