"""What happened in a run, round by round: the material of the report.

The strategy fills a :class:`RunRecord` as replies arrive; the report writer
only reads it. Nothing here knows Flower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shared.keys import ReplyKey


@dataclass
class HospitalRound:
    """One hospital's part in one round (aggregate scalars only).

    Attributes
    ----------
    train : dict[str, float]
        Training scalars it reported (loss, DP mechanism, epsilon).
    evaluation : dict[str, float]
        Metrics on its local held-out split.
    num_train_examples : int | None
        Rows it trained on (SecAgg+ weights its update by this count).
    num_eval_examples : int | None
        Rows it evaluated on.
    """

    train: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    num_train_examples: int | None = None
    num_eval_examples: int | None = None


@dataclass
class RoundRecord:
    """One round: who took part, what failed, and how the global model scored.

    Attributes
    ----------
    round : int
        1-based round number (0 is the initial model).
    test_metrics : dict[str, float]
        The global model on the held-out test set, when the aggregator has one.
    federated_metrics : dict[str, float]
        Hospitals' local evaluation metrics, weighted by their row counts.
    hospitals : dict[str, HospitalRound]
        Per-hospital scalars, by hospital name.
    failures : list[str]
        One line per failed reply (refusals, errors, timeouts).
    aggregated : bool
        Whether the global model was updated this round.
    seconds : float | None
        Wall time from sending the training instructions to the last evaluation reply.
    """

    round: int
    test_metrics: dict[str, float] = field(default_factory=dict)
    federated_metrics: dict[str, float] = field(default_factory=dict)
    hospitals: dict[str, HospitalRound] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    aggregated: bool = False
    seconds: float | None = None

    def hospital(self, name: str) -> HospitalRound:
        """Return (creating if needed) the entry of hospital ``name``."""
        return self.hospitals.setdefault(name, HospitalRound())


@dataclass
class RunRecord:
    """Every round of a run, in order, plus the run-level problems."""

    rounds: list[RoundRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def round(self, number: int) -> RoundRecord:
        """Return (creating if needed) the record of round ``number``."""
        for existing in self.rounds:
            if existing.round == number:
                return existing
        record = RoundRecord(round=number)
        self.rounds.append(record)
        self.rounds.sort(key=lambda r: r.round)
        return record

    def latest_epsilons(self, key: str = ReplyKey.EPSILON) -> dict[str, float]:
        """Each hospital's training scalar ``key`` as last reported (epsilon by default).

        Rounds a hospital skipped keep its earlier value.
        """
        spent: dict[str, float] = {}
        for record in self.rounds:
            for name, hospital in record.hospitals.items():
                if key in hospital.train:
                    spent[name] = hospital.train[key]
        return spent

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)
