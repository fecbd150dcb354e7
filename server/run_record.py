"""What happened in a run, round by round: the material of the report.

The strategy fills a :class:`RunRecord` as replies arrive; the report writer
only reads it. Nothing here knows Flower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fedcare.shared.keys import ReplyKey

EPSILONS_LISTED = 5
"""Up to this many hospitals, a round's log line lists each one's epsilon; above, the largest."""


@dataclass
class HospitalRound:
    """One hospital's part in one round (aggregate scalars only).

    Attributes
    ----------
    train : dict[str, float]
        Training scalars it reported (DP mechanism, epsilon; the loss only without DP).
    evaluation : dict[str, float]
        Metrics on its local held-out split (noisy under DP).
    privacy : dict[str, float]
        Epsilon it reported after the round's last release: this run's in all, on
        training, on evaluation, and its dataset's over every run.
    num_train_examples : int | None
        Rows it trained on (SecAgg+ weights its update by this count).
    num_eval_examples : int | None
        Rows it evaluated on.
    """

    train: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    privacy: dict[str, float] = field(default_factory=dict)
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
    asked : list[str]
        The hospitals (or node ids, before a hospital's first reply) sent the
        round's training instruction.
    hospitals : dict[str, HospitalRound]
        Per-hospital scalars, by hospital name (those that replied).
    failures : list[str]
        One line per failed reply (refusals, errors, timeouts).
    aggregated : bool
        Whether the global model was updated this round.
    seconds : float | None
        Wall time from sending the training instructions to the last evaluation reply.
    stage_seconds : dict[str, float]
        Where that time went: ``wait-train`` and ``wait-evaluate`` (waiting for
        hospitals to connect), then each exchange (``train`` or the SecAgg+
        stages ``setup``, ``share_keys``, ``collect_masked_vectors``, ``unmask``;
        and ``evaluate``), from sending to the last reply.
    """

    round: int
    test_metrics: dict[str, float] = field(default_factory=dict)
    federated_metrics: dict[str, float] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    hospitals: dict[str, HospitalRound] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    aggregated: bool = False
    seconds: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

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
        """Each hospital's privacy scalar ``key`` as last reported (this run's epsilon by default).

        Rounds a hospital skipped keep its earlier value.
        """
        spent: dict[str, float] = {}
        for record in self.rounds:
            for name, hospital in record.hospitals.items():
                # Spending is kept apart from training's scalars (noise, steps); records
                # from before that split hold them all under training.
                reported = {**hospital.train, **hospital.privacy}
                if key in reported:
                    spent[name] = reported[key]
        return spent

    def epsilon_summary(self) -> str:
        """Describe the epsilon spent so far (empty when none was reported).

        Each hospital's, or in a large federation the largest.
        """
        spent = self.latest_epsilons()
        if len(spent) <= EPSILONS_LISTED:
            return ", ".join(f"{name} {eps:.2f}" for name, eps in sorted(spent.items()))
        return f"at most {max(spent.values()):.2f} ({len(spent)} hospitals)"

    def latest_evaluations(self) -> dict[str, dict[str, float]]:
        """Return each hospital's local evaluation of the latest global model it scored."""
        scored: dict[str, dict[str, float]] = {}
        for record in self.rounds:
            for name, hospital in record.hospitals.items():
                if hospital.evaluation:
                    scored[name] = dict(hospital.evaluation)
        return scored

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any], *, through_round: int) -> RunRecord:
        """Rebuild a record written by :meth:`to_dict`, keeping rounds up to ``through_round``.

        Values JSON could not hold (NaN) come back as ``None`` and are dropped.
        """
        rounds = []
        for raw in payload.get("rounds", []):
            if raw["round"] > through_round:
                continue
            hospitals = {
                name: HospitalRound(
                    train=_numbers(entry.get("train", {})),
                    evaluation=_numbers(entry.get("evaluation", {})),
                    privacy=_numbers(entry.get("privacy", {})),
                    num_train_examples=entry.get("num_train_examples"),
                    num_eval_examples=entry.get("num_eval_examples"),
                )
                for name, entry in raw.get("hospitals", {}).items()
            }
            rounds.append(
                RoundRecord(
                    round=raw["round"],
                    test_metrics=_numbers(raw.get("test_metrics", {})),
                    federated_metrics=_numbers(raw.get("federated_metrics", {})),
                    asked=list(raw.get("asked", [])),
                    hospitals=hospitals,
                    failures=list(raw.get("failures", [])),
                    aggregated=bool(raw.get("aggregated", False)),
                    seconds=raw.get("seconds"),
                    stage_seconds=_numbers(raw.get("stage_seconds", {})),
                )
            )
        return cls(rounds=rounds, errors=list(payload.get("errors", [])))


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items() if value is not None}
