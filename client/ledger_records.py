"""What the privacy ledger records: releases, their validation, and the ledger's errors.

A release is one DP-SGD model update or one set of noisy evaluation statistics
(:class:`Mechanism`); :func:`validated_release` checks its parameters before anything
is accounted or stored, and :func:`entry_from_row` reads a stored one back as a
:class:`LedgerEntry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from fedcare.shared.errors import FedcareError
from fedcare.shared.privacy import HistoryEntry

RESTORE_REMEDY = (
    "Release nothing more from this node: restore the ledger from a backup (a lost entry "
    "would understate the epsilon spent) or, if there is none, treat every dataset on it "
    "as having spent its whole budget."
)


class Mechanism(StrEnum):
    """What released the data: both are accounted by the same RDP accountant."""

    SUBSAMPLED_GAUSSIAN = "subsampled-gaussian"
    """DP-SGD: Poisson-sampled batches, clipped gradients, Gaussian noise."""
    GAUSSIAN = "gaussian"
    """Noisy evaluation statistics: every held-out row, one release (sample rate 1)."""


class LedgerError(FedcareError):
    """The privacy ledger cannot be opened, read or written as asked."""


class LedgerCorruptError(LedgerError):
    """The ledger file is damaged or inconsistent; its spent epsilon cannot be trusted."""


class LedgerSchemaError(LedgerError):
    """The ledger was written by a newer fedcare, with a schema this one cannot read."""


class InvalidReleaseError(LedgerError, ValueError):
    """A release's parameters are outside what its mechanism's accounting allows."""


class UnknownReservationError(LedgerError, LookupError):
    """No ledger entry has the reservation id given."""


class ReleaseStatus(StrEnum):
    """Where a release stands; both count as spent."""

    RESERVED = "reserved"
    RELEASED = "released"


@dataclass(frozen=True)
class Reservation:
    """A release recorded write-ahead: it counts as spent from now on.

    Attributes
    ----------
    id : int
        The entry's id; pass it to :meth:`PrivacyLedger.confirm` after the send.
    dataset_id, run_id : str
        Whose data, and which run, released it.
    server_round : int
        The round it was released for.
    delta : float
        Delta at which ``epsilon_after`` is stated.
    epsilon_after : float
        The dataset's epsilon with this release composed in.
    """

    id: int
    dataset_id: str
    run_id: str
    server_round: int
    delta: float
    epsilon_after: float


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded release: a DP-SGD model update or noisy evaluation statistics.

    Attributes
    ----------
    id : int
        Unique, increasing in commit order.
    dataset_id, run_id : str
        Whose data (its fingerprint), and which run, released it.
    server_round : int
        The round it was released for (retries give several entries).
    mechanism, accountant : str
        A :class:`Mechanism` value and ``"rdp"``.
    noise_multiplier, sample_rate : float
        The mechanism's noise (per unit of sensitivity) and sampling rate (1 for
        an evaluation).
    steps : int
        Optimiser steps taken with it (1 for an evaluation).
    delta : float
        Delta at which ``epsilon_after`` is stated.
    epsilon_after : float
        The dataset's epsilon, composed over every entry up to and including this one.
    status : ReleaseStatus
        ``reserved`` until confirmed ``released``; both count as spent.
    recorded_at : datetime
        When it was reserved (UTC).
    label : str
        The hospital's label for the dataset when it was released.
    """

    id: int
    dataset_id: str
    run_id: str
    server_round: int
    mechanism: str
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_after: float
    status: ReleaseStatus
    recorded_at: datetime
    label: str = ""

    @property
    def is_evaluation(self) -> bool:
        """Whether this release is evaluation statistics (not a model update)."""
        return self.mechanism == Mechanism.GAUSSIAN

    def history_entry(self) -> HistoryEntry:
        """Return the accountant entry this release adds."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


@dataclass(frozen=True)
class DatasetSummary:
    """What one dataset has released, over all runs.

    Attributes
    ----------
    dataset_id : str
        The dataset's fingerprint.
    label : str
        The hospital's label for it at its latest release.
    entries, runs : int
        Releases recorded, and distinct runs they came from.
    last_recorded_at : datetime
        When the latest release was reserved (UTC).
    delta : float
        The latest release's delta.
    epsilon : float
        Epsilon spent, over every entry, at that delta.
    """

    dataset_id: str
    label: str
    entries: int
    runs: int
    last_recorded_at: datetime
    delta: float
    epsilon: float


def entry_from_row(row: Sequence[Any], path: Path) -> LedgerEntry:
    """Read one stored release back, or raise :class:`LedgerCorruptError` naming it."""
    try:
        return LedgerEntry(
            id=int(row[0]),
            dataset_id=str(row[1]),
            run_id=str(row[2]),
            server_round=int(row[3]),
            mechanism=str(row[4]),
            accountant=str(row[5]),
            noise_multiplier=float(row[6]),
            sample_rate=float(row[7]),
            steps=int(row[8]),
            delta=float(row[9]),
            epsilon_after=float(row[10]),
            status=ReleaseStatus(row[11]),
            recorded_at=datetime.fromisoformat(str(row[12])),
            label=str(row[13]),
        )
    except (TypeError, ValueError) as exc:
        raise LedgerCorruptError(
            f"privacy ledger {path} holds an unreadable entry (id {row[0]!r}): {exc}. "
            f"{RESTORE_REMEDY}"
        ) from exc


def validated_release(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> HistoryEntry:
    """Return the release's accountant entry, or raise :class:`InvalidReleaseError`."""
    validate_positive("noise_multiplier", noise_multiplier)
    validate_positive("sample_rate", sample_rate)
    if sample_rate > 1:
        raise InvalidReleaseError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
        raise InvalidReleaseError(f"steps must be a whole number >= 1, got {steps!r}")
    validate_delta(delta)
    return (float(noise_multiplier), float(sample_rate), int(steps))


def validate_mechanism(mechanism: Mechanism | str, release: HistoryEntry) -> None:
    """Refuse an unknown mechanism, or an evaluation that is not one pass over every row."""
    if mechanism not in set(Mechanism):
        raise InvalidReleaseError(f"mechanism must be one of {', '.join(Mechanism)}")
    if mechanism == Mechanism.GAUSSIAN and release[1:] != (1.0, 1):
        raise InvalidReleaseError(
            "an evaluation release (gaussian) uses every row once: sample_rate 1 and steps 1"
        )


def validate_positive(name: str, value: float) -> None:
    """Refuse a ``value`` that is not a finite number above 0, naming the field."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
        raise InvalidReleaseError(f"{name} must be a finite number > 0, got {value!r}")


def validate_delta(delta: float) -> None:
    """Refuse a ``delta`` outside (0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, Real) or not 0 < delta < 1:
        raise InvalidReleaseError(f"delta must be in (0, 1), got {delta!r}")


def validate_identity(dataset_id: str, run_id: str, server_round: int) -> None:
    """Refuse a release whose dataset, run or round cannot be recorded."""
    if not isinstance(dataset_id, str) or not dataset_id:
        raise InvalidReleaseError(f"dataset_id must be a non-empty string, got {dataset_id!r}")
    if not isinstance(run_id, str):
        raise InvalidReleaseError(f"run_id must be a string, got {run_id!r}")
    if isinstance(server_round, bool) or not isinstance(server_round, Integral) or server_round < 0:
        raise InvalidReleaseError(f"server_round must be a whole number >= 0, got {server_round!r}")
