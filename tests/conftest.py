"""Shared fixtures: small, seeded sites built from the real breast-cancer data."""

import pytest

from client.site import Site
from shared.config import DataSettings, RunConfig
from simulations.federation import build_federation


@pytest.fixture(scope="session")
def config() -> RunConfig:
    return RunConfig.from_flat({"num-server-rounds": 3, "device": "cpu"})


@pytest.fixture(scope="session")
def site(config: RunConfig) -> Site:
    federation = build_federation(config.data)
    hospital = federation.hospitals[1]
    return Site(name=hospital.name, task=federation.task, data=hospital.site)


@pytest.fixture(scope="session")
def default_data() -> DataSettings:
    return DataSettings()
