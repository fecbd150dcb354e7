"""Shared fixtures: small, seeded sites built from the real breast-cancer data."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.client.ledger import PrivacyLedger
from fedcare.client.site import Site
from fedcare.shared.config.data import DataSettings
from fedcare.shared.config.run_config import RunConfig
from fedcare.simulations.federation import build_federation


@pytest.fixture(scope="session")
def config() -> RunConfig:
    return RunConfig.from_flat({"num-server-rounds": 3, "device": "cpu"})


@pytest.fixture(scope="session")
def site(config: RunConfig, tmp_path_factory: pytest.TempPathFactory) -> Site:
    federation = build_federation(config.data)
    hospital = federation.hospitals[1]
    return Site(
        name=hospital.name,
        task=federation.task,
        data=hospital.site,
        state=tmp_path_factory.mktemp("site-state"),
        dataset=hospital.name,
    )


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[PrivacyLedger]:
    with PrivacyLedger(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture(scope="session")
def default_data() -> DataSettings:
    return DataSettings()


@pytest.fixture(scope="session", autouse=True)
def flower_home() -> None:
    """Keep Flower's state out of the user's home; never install dependencies at run time."""
    os.environ["FLWR_HOME"] = tempfile.mkdtemp(prefix="fedcare-flwr-home-")
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"


@pytest.fixture()
def task_identity() -> Iterator[None]:
    """Flower stamps messages with the running task's identity; stand in for one."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)  # noqa: SLF001
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved  # noqa: SLF001
