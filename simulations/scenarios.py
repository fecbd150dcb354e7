"""Named scenario presets for ``fedcare simulate --scenario NAME``.

A scenario is a set of run-config overrides on top of the defaults; explicit
command-line options override the scenario in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedcare.shared.config.flat import FlatValue
from fedcare.shared.errors import ConfigError

DEFAULT_SCENARIO = "breast-cancer"


@dataclass(frozen=True)
class Scenario:
    """A named, described set of run-config overrides."""

    description: str
    overrides: Mapping[str, FlatValue] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {
    DEFAULT_SCENARIO: Scenario(
        "3 hospitals share Breast Cancer Wisconsin (569 patients) with label and size "
        "skew (Dirichlet alpha 2); DP-SGD at epsilon 3 and SecAgg+"
    ),
    "breast-cancer-iid": Scenario(
        "as breast-cancer, but patients are dealt out evenly (IID): the easy case",
        {"partition": "iid"},
    ),
    "breast-cancer-severe-skew": Scenario(
        "as breast-cancer, with severe label skew (Dirichlet alpha 0.5): "
        "one hospital sees almost no malignancies",
        {"dirichlet-alpha": 0.5},
    ),
    "breast-cancer-sizes": Scenario(
        "as breast-cancer, with hospitals of very different sizes but the same case mix",
        {"partition": "quantity", "dirichlet-alpha": 1.0},
    ),
    "breast-cancer-10": Scenario(
        "10 smaller hospitals with moderate label skew",
        # A quarter held out locally keeps each hospital's evaluation above the
        # egress guard's 10-patient minimum for aggregate metrics.
        {"hospitals": 10, "dirichlet-alpha": 5.0, "eval-fraction": 0.25},
    ),
    "many-hospitals": Scenario(
        "100 hospitals of 600 synthetic discharge records each (readmission within 30 days), "
        "dealt out evenly; with --hospitals up to 1,000 (60 records each)",
        {"dataset": "synthetic-records", "hospitals": 100, "partition": "iid"},
    ),
    "imaging": Scenario(
        "3 hospitals with 900 synthetic 28x28 films (normal, nodule, opacity) and label "
        "skew; a small CNN (GroupNorm) under DP-SGD at epsilon 3 and SecAgg+",
        {"dataset": "synthetic-images", "model": "cnn", "learning-rate": 0.3},
    ),
    "vitals-gru": Scenario(
        "3 hospitals with 600 synthetic ICU stays (24 hourly vitals and lactate); a GRU "
        "predicts deterioration from the trends",
        {"dataset": "synthetic-vitals", "model": "gru"},
    ),
    "vitals-transformer": Scenario(
        "as vitals-gru, with a small Transformer encoder (Opacus' DP attention)",
        {"dataset": "synthetic-vitals", "model": "transformer", "learning-rate": 0.15},
    ),
    "diabetes": Scenario(
        "3 hospitals of different sizes share the diabetes progression study (442 patients); "
        "an MLP predicts progression after one year (MAE in score points)",
        {"dataset": "diabetes", "model": "mlp", "partition": "quantity", "learning-rate": 0.1},
    ),
    "survival": Scenario(
        "the NCCTG lung-cancer trial's 18 institutions, grouped whole into 3 hospitals; a "
        "discrete-time survival model scored by C-index",
        {"dataset": "lung-survival", "partition": "natural", "learning-rate": 1.0},
    ),
    "treatments": Scenario(
        "3 hospitals, each with its own 200 of 600 synthetic patients given 8 of 20 treatments; "
        "neural collaborative filtering ranks untried treatments (hit-rate@5, NDCG@5 of a "
        "held-out response). Patient embeddings never leave their hospital",
        # About 1,400 training interactions per hospital: SecAgg+ scales each update by
        # rows / secagg-max-weight, which must stay at most 1 to keep within its range.
        # Larger batches (with the step size scaled along) lose less to DP-SGD's noise
        # per epoch; this pair gave the steadiest ranking at epsilon 3.
        {
            "dataset": "treatments",
            "model": "ncf",
            "partition": "iid",
            "batch-size": 128,
            "learning-rate": 2.0,
            "secagg-max-weight": 2000.0,
        },
    ),
    "autoencoder": Scenario(
        "a convolutional autoencoder learns the synthetic films without labels; its encoder "
        "can initialise the imaging CNN (reconstruction error as metric)",
        {"dataset": "synthetic-images", "model": "autoencoder"},
    ),
}


def scenario_overrides(name: str) -> Mapping[str, FlatValue]:
    """Return the run-config overrides of scenario ``name``.

    Raises
    ------
    ConfigError
        If there is no such scenario; the message lists them.
    """
    if name not in SCENARIOS:
        raise ConfigError(
            "scenario", f"unknown scenario '{name}'; choose one of {', '.join(SCENARIOS)}"
        )
    return SCENARIOS[name].overrides
