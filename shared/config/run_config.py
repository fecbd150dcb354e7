"""The whole run configuration: every section together, parsed from Flower's flat mapping.

:meth:`RunConfig.from_flat` is the edge: it rejects unknown keys (suggesting the
closest known one), parses each section (:mod:`.flat`) and checks what spans
sections (enough hospitals for ``min-hospitals`` and for SecAgg+, evaluation
rounds within the run's rounds, a robust rule only without secure aggregation).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from fedcare.shared.config.data import DataSettings
from fedcare.shared.config.federation import AggregationName, FederationSettings
from fedcare.shared.config.flat import FlatValue, parse_section, require
from fedcare.shared.config.output import OutputSettings
from fedcare.shared.config.privacy import PrivacySettings
from fedcare.shared.config.secagg import (
    SECAGG_MIN_HOSPITALS,
    SECAGG_MIN_ROUND,
    SecureAggregationSettings,
)
from fedcare.shared.config.server_optimizer import ServerOptimizerSettings
from fedcare.shared.config.training import PersonaliseLayers, TrainingSettings
from fedcare.shared.errors import ConfigError

_SECTIONS: dict[str, type[Any]] = {
    "federation": FederationSettings,
    "server_optimizer": ServerOptimizerSettings,
    "training": TrainingSettings,
    "privacy": PrivacySettings,
    "secure_aggregation": SecureAggregationSettings,
    "data": DataSettings,
    "output": OutputSettings,
}


@dataclass(frozen=True)
class RunConfig:
    """The whole, resolved configuration of one federated run."""

    federation: FederationSettings = field(default_factory=FederationSettings)
    server_optimizer: ServerOptimizerSettings = field(default_factory=ServerOptimizerSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    secure_aggregation: SecureAggregationSettings = field(default_factory=SecureAggregationSettings)
    data: DataSettings = field(default_factory=DataSettings)
    output: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self) -> None:
        hospitals = self.data.hospitals
        minimum = self.federation.min_hospitals
        require(
            minimum <= hospitals,
            "min-hospitals",
            f"must be at most hospitals ({hospitals}) (got {minimum})",
        )
        require(
            self.privacy.evaluation_rounds <= self.federation.rounds,
            "evaluation-rounds",
            f"must be at most num-server-rounds ({self.federation.rounds}) "
            f"(got {self.privacy.evaluation_rounds})",
        )
        require(
            self.training.personalise_layers is PersonaliseLayers.NONE
            or self.privacy.evaluation_rounds > 0,
            "personalise-layers",
            "needs evaluation-rounds >= 1: personalised metrics leave with the last evaluation",
        )
        if self.secure_aggregation.enabled:
            require(
                self.federation.aggregation is AggregationName.FEDAVG,
                "aggregation",
                f"'{self.federation.aggregation}' must see each update, which secure "
                "aggregation hides; use fedavg, or turn secure aggregation off explicitly "
                "(the aggregator then sees every hospital's DP-noised update)",
            )
            require(
                hospitals >= SECAGG_MIN_HOSPITALS,
                "hospitals",
                f"SecAgg+ needs at least {SECAGG_MIN_HOSPITALS} hospitals (got {hospitals}); "
                "add hospitals, or turn secure aggregation off explicitly",
            )
            require(
                minimum >= SECAGG_MIN_ROUND,
                "min-hospitals",
                f"SecAgg+ cannot run a round with fewer than {SECAGG_MIN_ROUND} hospitals "
                f"(got {minimum})",
            )

    @classmethod
    def from_flat(cls, flat: Mapping[str, FlatValue]) -> RunConfig:
        """Parse and validate a flat kebab-case mapping (Flower's run config).

        Parameters
        ----------
        flat : Mapping[str, FlatValue]
            Any subset of :func:`config_keys`; missing keys take their defaults.

        Returns
        -------
        RunConfig
            The validated configuration.

        Raises
        ------
        ConfigError
            For an unknown key, a value of the wrong type, or one out of range.
        """
        known = set(config_keys())
        for key in flat:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(key, f"unknown setting{hint}")
        sections = {name: parse_section(section, flat) for name, section in _SECTIONS.items()}
        return cls(**sections)

    def to_flat(self) -> dict[str, FlatValue]:
        """Return the configuration as Flower's flat kebab-case mapping."""
        flat: dict[str, FlatValue] = {}
        for name in _SECTIONS:
            section = getattr(self, name)
            for f in fields(section):
                value = getattr(section, f.name)
                flat[f.metadata["key"]] = value.value if isinstance(value, StrEnum) else value
        return flat

    def with_out_dir(self, out_dir: str) -> RunConfig:
        """Return a copy whose run folder is ``out_dir``."""
        return replace(self, output=replace(self.output, out_dir=out_dir))

    def evaluation_round_numbers(self) -> frozenset[int]:
        """Return the rounds in which hospitals evaluate.

        ``evaluation-rounds`` of them, evenly spread and ending with the last round
        (none when it is 0).
        """
        rounds, wanted = self.federation.rounds, self.privacy.evaluation_rounds
        return frozenset(math.ceil(rounds * k / wanted) for k in range(1, wanted + 1))

    def weakened_protections(self) -> list[str]:
        """Name every protection this configuration turns off (empty when all are on)."""
        weakened = []
        if not self.privacy.enabled:
            weakened.append("differential privacy is OFF: hospital updates carry no DP noise")
        if not self.secure_aggregation.enabled:
            weakened.append("secure aggregation is OFF: the aggregator sees each hospital's update")
        return weakened


def config_keys() -> list[str]:
    """Every run-config key fedcare understands, in declaration order."""
    return [f.metadata["key"] for section in _SECTIONS.values() for f in fields(section)]
