"""Privacy settings: sample-level DP-SGD at every hospital, and its evaluation share."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedcare.shared.config.flat import require, setting


@dataclass(frozen=True)
class PrivacySettings:
    """Sample-level differential privacy at every hospital (DP-SGD).

    Attributes
    ----------
    enabled : bool
        DP-SGD on. Turning it off needs an explicit flag and is reported loudly.
    target_epsilon : float
        Epsilon each hospital may spend over the whole run.
    delta : float
        The delta of the (epsilon, delta) guarantee; keep it well below 1/n.
    max_grad_norm : float
        Per-sample gradient clipping bound C.
    ledger_run : str
        The run hospitals book this run's privacy spending under; empty means
        Flower's run id. A resumed run sets it to the original run's, so its
        rounds draw on the same per-run budget.
    evaluation_share : float
        The share of ``target_epsilon`` set aside for the hospitals' evaluations:
        their Gaussian noise is calibrated so that the run's evaluation releases
        alone spend ``evaluation_share x target_epsilon`` (0.99 of the default 3);
        DP-SGD's noise is then calibrated so that training and evaluation composed
        (RDP) stay within ``target_epsilon``. Composition in RDP costs training
        less than that share: about 2.77 of 3 is left for it alone.
    evaluation_rounds : int
        In how many rounds hospitals evaluate the global model on their own
        held-out rows (spread evenly, ending with the last round); 0 asks for no
        hospital evaluation at all.
    """

    enabled: bool = setting("differential-privacy", True)
    target_epsilon: float = setting("epsilon", 3.0)
    delta: float = setting("delta", 1e-5)
    max_grad_norm: float = setting("max-grad-norm", 1.0)
    ledger_run: str = setting("ledger-run", "")
    evaluation_share: float = setting("evaluation-share", 0.33)
    evaluation_rounds: int = setting("evaluation-rounds", 1)

    def __post_init__(self) -> None:
        require(
            self.target_epsilon > 0 and math.isfinite(self.target_epsilon),
            "epsilon",
            f"must be a finite number > 0 (got {self.target_epsilon})",
        )
        require(0 < self.delta < 1, "delta", f"must lie in (0, 1) (got {self.delta})")
        require(
            self.max_grad_norm > 0,
            "max-grad-norm",
            f"must be > 0 (got {self.max_grad_norm})",
        )
        require(
            self.evaluation_rounds >= 0,
            "evaluation-rounds",
            f"must be >= 0 (got {self.evaluation_rounds})",
        )
        require(
            0 < self.evaluation_share < 1,
            "evaluation-share",
            f"must lie in (0, 1) so that training keeps a budget (got {self.evaluation_share}); "
            "set evaluation-rounds = 0 for no hospital evaluation",
        )

    @property
    def evaluation_epsilon(self) -> float:
        """Epsilon the run's evaluation releases may spend by themselves."""
        return self.evaluation_share * self.target_epsilon
