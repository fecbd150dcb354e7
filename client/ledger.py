"""A hospital's persistent, crash-safe record of every release from its data.

Two mechanisms are recorded, both as entries of one RDP accountant: DP-SGD model
updates (the subsampled Gaussian mechanism) and evaluation statistics (the
Gaussian mechanism, sample rate 1, one step; :mod:`shared.private_metrics`).

Every release is written to the ledger *before* the update leaves the hospital
(write-ahead): :meth:`PrivacyLedger.reserve` composes the dataset's whole history
with the new entry, refuses if that exceeds the cap, and otherwise commits the
entry durably and only then returns. The caller sends the update after that, so
the ledger never records less than was released:

* a crash before the commit leaves nothing recorded, and nothing was sent;
* a crash after the commit but before the send leaves an entry that counts as
  spent although nothing left the hospital; that overcount is the safe direction,
  because nobody can tell afterwards whether the network send happened.

Epsilon is per dataset and composed over *every* entry of all rounds of all
runs, with one RDP computation (:func:`shared.privacy.epsilon_spent`): RDP
values add under sequential composition, across runs, rounds and mechanisms.
A dataset is named twice: by ``dataset_id``, the fingerprint of its rows and
contract (:func:`shared.data.dataset_fingerprint`), and by the hospital's
``label`` for it. A release is composed with every earlier release that shares
either name, so neither a new label for the same rows nor changed rows under the
same label start a fresh budget.

Retries are not deduplicated. If a client crashes after reserving and the round
is retried, the retried round releases a second update, so it is recorded again:
two entries with the same ``(dataset_id, run_id, server_round)``, both spent.

Entries may carry different deltas (a run's guarantee is stated at its delta).
RDP does not depend on delta; only the conversion to epsilon takes one, so every
query composes all entries and converts at the delta it is asked for.

Storage is SQLite in WAL mode with ``synchronous=FULL`` (a committed entry
survives a process kill and a power loss). Every write is one ``BEGIN IMMEDIATE``
transaction: it takes the database's write lock, reads the dataset's history
*under that lock*, checks the cap against it and inserts, so two processes on one
node can neither lose nor double-count entries, nor both fit under the cap with
releases that together exceed it. (The slow RDP analysis is done beforehand on a
snapshot and redone under the lock only if the history changed in between.) Open
one :class:`PrivacyLedger` per process (never share one across ``fork``).

What a release is and the ledger's errors live in :mod:`fedcare.client.ledger_records`,
the SQLite file in :mod:`fedcare.client.ledger_storage`, and the re-verification and
refusal of the composed epsilon in :mod:`fedcare.client.ledger_accounting`.

Examples
--------
>>> import tempfile
>>> ledger = PrivacyLedger(Path(tempfile.mkdtemp()) / "privacy.sqlite")
>>> r = ledger.reserve("sha256:ab12", run_id="run-1", server_round=1, noise_multiplier=1.1,
...                    sample_rate=0.05, steps=40, delta=1e-5, cap_epsilon=3.0)
>>> ledger.confirm(r.id)
>>> ledger.spent("sha256:ab12", delta=1e-5) == r.epsilon_after
True
>>> ledger.close()
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from fedcare.client.ledger_accounting import check_epsilons, dataset_summary, refusal_message
from fedcare.client.ledger_records import (
    DatasetSummary,
    LedgerEntry,
    LedgerError,
    Mechanism,
    ReleaseStatus,
    Reservation,
    UnknownReservationError,
    entry_from_row,
    validate_delta,
    validate_identity,
    validate_mechanism,
    validate_positive,
    validated_release,
)
from fedcare.client.ledger_storage import (
    BUSY_TIMEOUT_S,
    SQL_ALL_ENTRIES,
    SQL_CONFIRM,
    SQL_DATASET_ENTRIES,
    SQL_INSERT_RELEASE,
    SQL_INTEGRITY_CHECK,
    SQL_QUICK_CHECK,
    check_version,
    configure,
    dataset_snapshot,
    insert_params,
    migrate,
    raise_unless_ok,
    translated_errors,
    write_transaction,
)
from fedcare.client.state_files import LEDGER_FILE
from fedcare.shared.errors import PrivacyBudgetExceededError
from fedcare.shared.privacy import HistoryEntry, epsilon_spent


def ledger_path(state: Path) -> Path:
    """Return the privacy ledger's path inside a hospital's state folder."""
    return state / LEDGER_FILE


class PrivacyLedger:
    """Every release of one hospital, in an SQLite file, composed per dataset.

    Parameters
    ----------
    path : Path
        The ledger file; created (with its folder) if missing. Keep it on a local disk:
        SQLite's locking, which keeps concurrent processes from losing entries, is
        unreliable on network file systems.

    Raises
    ------
    LedgerCorruptError
        If the file is not an SQLite database or fails SQLite's quick check.
    LedgerSchemaError
        If a newer fedcare wrote it.
    LedgerError
        If it is another program's database, or cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # One connection per ledger, used by one thread at a time; SQLite locks across processes.
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with translated_errors(self.path):
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                configure(self._conn, self.path)
                raise_unless_ok(self._conn.execute(SQL_QUICK_CHECK).fetchall(), self.path)
                migrate(self._conn, self.path)
            except BaseException:
                self._conn.close()
                raise

    def close(self) -> None:
        """Close the file (the last process to close it folds the write-ahead log in)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def reserve(  # noqa: PLR0913 - a release's identity and mechanism, each needed
        self,
        dataset_id: str,
        *,
        label: str = "",
        mechanism: Mechanism = Mechanism.SUBSAMPLED_GAUSSIAN,
        run_id: str,
        server_round: int,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        delta: float,
        cap_epsilon: float,
    ) -> Reservation:
        """Record a release durably, before it is sent, unless it would exceed the cap.

        Call it after local training and before the update leaves the hospital; send
        only if it returns. The entry counts as spent from the moment it returns.
        Reserving the same ``(dataset_id, run_id, server_round)`` again records a
        second entry: a retried round releases a second update.

        Parameters
        ----------
        dataset_id : str
            Which dataset it comes from: its fingerprint.
        label : str
            The hospital's label for the dataset; releases under the same label
            compose with this one even if the fingerprint differs ("" for none).
        mechanism : Mechanism
            A DP-SGD update or an evaluation release.
        run_id : str
            The run releasing it.
        server_round : int
            The round it is released for.
        noise_multiplier, sample_rate : float
            The mechanism used (an evaluation has sample rate 1).
        steps : int
            Optimiser steps taken with it (1 for an evaluation).
        delta : float
            Delta at which the cap is checked.
        cap_epsilon : float
            Epsilon the dataset may reach, over all its releases.

        Returns
        -------
        Reservation
            The committed entry's id and the dataset's epsilon with it.

        Raises
        ------
        PrivacyBudgetExceededError
            If the dataset would exceed ``cap_epsilon``; nothing is recorded.
        InvalidReleaseError
            If a parameter is outside its allowed range.
        """
        release = validated_release(noise_multiplier, sample_rate, steps, delta)
        validate_identity(dataset_id, run_id, server_round)
        validate_mechanism(mechanism, release)
        validate_positive("cap_epsilon", cap_epsilon)
        identity = {
            "dataset_id": dataset_id,
            "label": str(label),
            "mechanism": Mechanism(mechanism).value,
            "run_id": run_id,
            "server_round": int(server_round),
        }
        with self._lock, translated_errors(self.path):
            # The RDP analysis is slow (up to ~0.1 s a mechanism), so it runs before the
            # write lock is taken, on a snapshot; _record redoes it under the lock only
            # if another process recorded a release of this dataset in between.
            seen = dataset_snapshot(self._conn, dataset_id, label)
            after = epsilon_spent([*_entries_of(seen), release], delta=delta)
            with write_transaction(self._conn) as conn:
                new_id, after = _record(conn, seen, after, identity, release, delta, cap_epsilon)
        return Reservation(
            id=new_id,
            dataset_id=dataset_id,
            run_id=run_id,
            server_round=int(server_round),
            delta=float(delta),
            epsilon_after=after,
        )

    def confirm(self, reservation_id: int) -> None:
        """Mark a reservation ``released`` once its send was handed to Flower.

        Informational only: a reserved entry already counts as spent. Confirming
        twice is harmless.

        Raises
        ------
        UnknownReservationError
            If no entry has ``reservation_id``.
        """
        with self._lock, translated_errors(self.path), write_transaction(self._conn) as conn:
            updated = conn.execute(SQL_CONFIRM, (ReleaseStatus.RELEASED.value, reservation_id))
            if updated.rowcount == 0:
                raise UnknownReservationError(
                    f"privacy ledger {self.path} has no reservation {reservation_id}; "
                    "pass the id that reserve() returned"
                )

    def preview(
        self,
        dataset_id: str,
        *,
        label: str = "",
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        delta: float,
        then: Sequence[HistoryEntry] = (),
    ) -> float:
        """Epsilon the dataset would reach after such a release (and ``then``); writes nothing.

        Use it to refuse a round *before* training. It does not hold the write lock,
        so :meth:`reserve` re-checks the cap when the release is recorded. ``then``
        holds releases that must follow this one (a fine-tuning's evaluation).

        Raises
        ------
        InvalidReleaseError
            If a parameter is outside its allowed range.
        """
        release = validated_release(noise_multiplier, sample_rate, steps, delta)
        with self._lock, translated_errors(self.path):
            history = _entries_of(dataset_snapshot(self._conn, dataset_id, label))
        return epsilon_spent([*history, release, *then], delta=delta)

    def spent(self, dataset_id: str, *, delta: float, label: str = "") -> float:
        """Epsilon spent by the dataset over all its releases, at ``delta`` (0 if none).

        The dataset's releases are those of fingerprint ``dataset_id`` and, when
        ``label`` is given, those of that label. Reserved entries count, whether
        or not they were confirmed.
        """
        validate_delta(delta)
        with self._lock, translated_errors(self.path):
            history = _entries_of(dataset_snapshot(self._conn, dataset_id, label))
        return epsilon_spent(history, delta=delta)

    def history(self, dataset_id: str, *, label: str = "") -> list[LedgerEntry]:
        """Every release of the dataset (fingerprint or ``label``), in the order recorded."""
        with self._lock, translated_errors(self.path):
            rows = self._conn.execute(
                SQL_DATASET_ENTRIES, {"dataset_id": dataset_id, "label": label}
            ).fetchall()
            return [entry_from_row(row, self.path) for row in rows]

    def datasets(self) -> list[DatasetSummary]:
        """One summary per dataset with releases, by ``dataset_id``."""
        return [dataset_summary(entries) for entries in self._entries_by_dataset().values()]

    def check(self) -> None:
        """Verify the file's integrity and that no entry understates its epsilon.

        Runs SQLite's full ``integrity_check``, then recomputes each entry's epsilon
        from the entries recorded up to it (at its own delta).

        Raises
        ------
        LedgerCorruptError
            Naming the first problems found.
        """
        with self._lock, translated_errors(self.path):
            raise_unless_ok(self._conn.execute(SQL_INTEGRITY_CHECK).fetchall(), self.path)
            check_version(self._conn, self.path)
        for entries in self._entries_by_dataset().values():
            check_epsilons(entries, self.path)

    def _entries_by_dataset(self) -> dict[str, list[LedgerEntry]]:
        # One SELECT: a consistent snapshot even while other processes write.
        with self._lock, translated_errors(self.path):
            rows = self._conn.execute(SQL_ALL_ENTRIES).fetchall()
        grouped: dict[str, list[LedgerEntry]] = {}
        for row in rows:
            entry = entry_from_row(row, self.path)
            grouped.setdefault(entry.dataset_id, []).append(entry)
        return grouped


def _entries_of(snapshot: Sequence[tuple[int, HistoryEntry]]) -> list[HistoryEntry]:
    return [entry for _, entry in snapshot]


def _record(
    conn: sqlite3.Connection,
    seen: Sequence[tuple[int, HistoryEntry]],
    after: float,
    identity: dict[str, str | int],
    release: HistoryEntry,
    delta: float,
    cap_epsilon: float,
) -> tuple[int, float]:
    """Insert the release (inside the write transaction) unless it exceeds the cap.

    ``after`` was computed from ``seen``; what is checked and stored is always
    composed from the history read under the write lock, which no other process
    can extend until this transaction ends.
    """
    current = dataset_snapshot(conn, str(identity["dataset_id"]), str(identity["label"]))
    if current != seen:
        after = epsilon_spent([*_entries_of(current), release], delta=delta)
    if not after <= cap_epsilon:  # also refuses a NaN epsilon
        history = _entries_of(current)
        name = str(identity["label"]) or "this dataset"
        raise PrivacyBudgetExceededError(refusal_message(name, history, after, cap_epsilon, delta))
    inserted = conn.execute(SQL_INSERT_RELEASE, insert_params(identity, release, delta, after))
    if inserted.lastrowid is None:
        raise LedgerError("SQLite returned no id for a recorded release; nothing was recorded")
    return inserted.lastrowid, after
