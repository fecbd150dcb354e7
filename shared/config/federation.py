"""Federation settings: how long the run lasts and waits, and how updates are combined."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fedcare.shared.config.flat import require, setting


class AggregationName(StrEnum):
    """How the aggregator combines updates: FedAvg, or one of Flower's robust rules."""

    FEDAVG = "fedavg"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    KRUM = "krum"


class FailedRoundPolicy(StrEnum):
    """What the run does after a round that could not update the model."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class FederationSettings:
    """How long the federation runs and how long it waits.

    Attributes
    ----------
    rounds : int
        Number of federated rounds (``num-server-rounds``).
    round_timeout : float
        Seconds the aggregator waits for each round's replies (and for each
        SecAgg+ stage) before going on with whoever answered.
    min_hospitals : int
        Fewest hospitals a round may go on with once the deadline has passed
        (hospitals drop out; a round with fewer fails and is reported).
    hospital_names : str
        ``node-id=name`` pairs, comma-separated, so the report can name a hospital
        that dropped out before it ever replied (``fedcare run`` fills it in from
        the registrations ``fedcare aggregator register`` recorded).
    aggregation : AggregationName
        FedAvg, or a robust rule (median, trimmed mean, Krum) that needs every
        update in the clear, so secure aggregation off.
    max_update_norm : float
        Largest L2 norm a hospital's update may have; without secure aggregation
        every reply is checked against it (and its shapes, values and row count)
        before aggregation, and an offending one is rejected and reported.
    trim_fraction : float
        Share of updates the trimmed mean cuts from each end.
    krum_byzantine : int
        Hospitals Krum assumes may be hostile (it needs 2f + 3 updates).
    on_failed_round : FailedRoundPolicy
        After a round that could not update the model (too few hospitals by the
        deadline, SecAgg+ below its threshold, every update rejected): go on to
        the next round, or stop cleanly, resumable from the last complete round.
    """

    rounds: int = setting("num-server-rounds", 5)
    round_timeout: float = setting("round-timeout", 300.0)
    min_hospitals: int = setting("min-hospitals", 2)
    hospital_names: str = setting("hospital-names", "")
    aggregation: AggregationName = setting("aggregation", AggregationName.FEDAVG)
    max_update_norm: float = setting("max-update-norm", 10.0)
    trim_fraction: float = setting("trim-fraction", 0.2)
    krum_byzantine: int = setting("krum-byzantine", 1)
    on_failed_round: FailedRoundPolicy = setting("on-failed-round", FailedRoundPolicy.CONTINUE)

    def names_by_node(self) -> dict[int, str]:
        """:attr:`hospital_names` as a mapping from node id to name."""
        pairs = (pair.partition("=") for pair in self.hospital_names.split(",") if pair)
        return {int(node): name for node, _, name in pairs}

    def __post_init__(self) -> None:
        require(self.rounds >= 1, "num-server-rounds", f"must be >= 1 (got {self.rounds})")
        require(
            self.round_timeout > 0,
            "round-timeout",
            f"must be > 0 seconds (got {self.round_timeout})",
        )
        require(
            self.min_hospitals >= 1, "min-hospitals", f"must be >= 1 (got {self.min_hospitals})"
        )
        require(
            self.max_update_norm > 0,
            "max-update-norm",
            f"must be > 0 (got {self.max_update_norm})",
        )
        require(
            0 < self.trim_fraction < 0.5,
            "trim-fraction",
            f"must lie in (0, 0.5) (got {self.trim_fraction})",
        )
        require(
            self.krum_byzantine >= 0, "krum-byzantine", f"must be >= 0 (got {self.krum_byzantine})"
        )
        pairs = [pair.partition("=") for pair in self.hospital_names.split(",") if pair]
        require(
            all(node.isdigit() and sep and name for node, sep, name in pairs),
            "hospital-names",
            "must be comma-separated node-id=name pairs",
        )
