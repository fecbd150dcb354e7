"""Server optimiser settings: how each round's mean update becomes the next global model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from fedcare.shared.config.flat import require, setting


class ServerOptimizerName(StrEnum):
    """How the aggregator applies each round's mean update.

    ``none`` adds it as is (FedAvg); the others treat it as a pseudo-gradient for
    an adaptive server optimiser (Reddi et al., 2021, "Adaptive Federated
    Optimization").
    """

    NONE = "none"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDADAGRAD = "fedadagrad"


@dataclass(frozen=True)
class ServerOptimizerSettings:
    """The server optimiser that turns each round's mean update into the next global model.

    It sees only the aggregate (under SecAgg+, only the sum ever reaches the
    aggregator), so it works with secure aggregation and, being post-processing
    of DP-SGD's releases, costs no privacy.

    Attributes
    ----------
    optimizer : ServerOptimizerName
        ``none`` adds the mean update (FedAvg); ``fedadam``, ``fedyogi`` and
        ``fedadagrad`` keep per-parameter moments across rounds.
    learning_rate : float
        Server step size (eta); ``none`` ignores it.
    beta1 : float
        Decay of the first moment (momentum), in [0, 1).
    beta2 : float
        Decay of the second moment, in [0, 1) (FedAdam and FedYogi).
    tau : float
        Adaptivity floor added to the root of the second moment; larger is
        closer to plain server SGD.
    """

    optimizer: ServerOptimizerName = setting("server-optimizer", ServerOptimizerName.NONE)
    learning_rate: float = setting("server-learning-rate", 0.1)
    beta1: float = setting("server-beta1", 0.9)
    beta2: float = setting("server-beta2", 0.99)
    tau: float = setting("server-tau", 1e-3)

    def __post_init__(self) -> None:
        require(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "server-learning-rate",
            f"must be a finite number > 0 (got {self.learning_rate})",
        )
        for key, beta in (("server-beta1", self.beta1), ("server-beta2", self.beta2)):
            require(0 <= beta < 1, key, f"must lie in [0, 1) (got {beta})")
        require(
            self.tau > 0 and math.isfinite(self.tau),
            "server-tau",
            f"must be a finite number > 0 (got {self.tau}); it keeps the step finite "
            "where an update's second moment is zero",
        )
