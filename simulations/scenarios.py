"""Named scenario presets for ``fedcare simulate --scenario NAME``.

A scenario is a set of run-config overrides on top of the defaults; explicit
command-line options override the scenario in turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.config import FlatValue
from shared.errors import ConfigError

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
