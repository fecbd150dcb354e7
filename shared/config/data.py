"""Data settings: where hospital data comes from and how each hospital splits it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fedcare.shared.config.flat import require, setting


class DatasetName(StrEnum):
    """Datasets shipped inside installed packages, used by simulated hospitals."""

    BREAST_CANCER = "breast-cancer"
    DIABETES = "diabetes"
    LUNG_SURVIVAL = "lung-survival"
    SYNTHETIC_IMAGES = "synthetic-images"
    SYNTHETIC_VITALS = "synthetic-vitals"
    SYNTHETIC_RECORDS = "synthetic-records"
    TREATMENTS = "treatments"


class PartitionName(StrEnum):
    """How a simulation splits a dataset among virtual hospitals."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    QUANTITY = "quantity"
    NATURAL = "natural"


@dataclass(frozen=True)
class DataSettings:
    """Where hospital data comes from and how each hospital splits it.

    Attributes
    ----------
    dataset : DatasetName
        Built-in dataset that simulated hospitals share out.
    hospitals : int
        Number of hospitals in the federation; every round waits for them all
        (until ``round-timeout``).
    partition : PartitionName
        How the simulation splits the dataset among hospitals.
    dirichlet_alpha : float
        Concentration of the Dirichlet draw for ``dirichlet`` (label skew) and
        ``quantity`` (size skew); smaller is more skewed.
    seed : int
        Seed of every data split of a simulation, so a scenario is reproducible
        (a real hospital splits with its own ``split-seed``, never the run's).
    test_fraction : float
        Share of the dataset held out as the never-trained-on test set.
    eval_fraction : float
        Share of each simulated hospital's rows kept for its local evaluation (a
        real hospital uses its own ``eval-fraction``, never the run's). The
        default, 0.25, leaves every class of the default simulation's hospitals
        the ``min-count`` of 10 held-out rows an evaluation needs.
    contract : str
        The federation's data contract (TOML text) when real hospitals train on
        their own files; empty in a simulation, which uses ``dataset``.
    """

    dataset: DatasetName = setting("dataset", DatasetName.BREAST_CANCER)
    hospitals: int = setting("hospitals", 3)
    partition: PartitionName = setting("partition", PartitionName.DIRICHLET)
    dirichlet_alpha: float = setting("dirichlet-alpha", 2.0)
    seed: int = setting("seed", 42)
    test_fraction: float = setting("test-fraction", 0.25)
    eval_fraction: float = setting("eval-fraction", 0.25)
    contract: str = setting("contract", "")

    @property
    def simulated(self) -> bool:
        """Whether hospitals are virtual, sharing out the built-in ``dataset``."""
        return not self.contract

    def __post_init__(self) -> None:
        require(self.hospitals >= 1, "hospitals", f"must be >= 1 (got {self.hospitals})")
        require(
            self.dirichlet_alpha > 0,
            "dirichlet-alpha",
            f"must be > 0 (got {self.dirichlet_alpha})",
        )
        require(
            0 < self.test_fraction < 1,
            "test-fraction",
            f"must lie in (0, 1) (got {self.test_fraction})",
        )
        require(
            0 < self.eval_fraction < 1,
            "eval-fraction",
            f"must lie in (0, 1) (got {self.eval_fraction})",
        )
