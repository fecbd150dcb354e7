"""Which data a hospital trains on, found from its node config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import RunConfig
from shared.data import SiteData
from shared.errors import DataError
from shared.keys import NodeConfigKey
from shared.tasks import Task


@dataclass(frozen=True)
class Site:
    """A hospital's name, task and prepared data.

    Attributes
    ----------
    name : str
        How the hospital is named in reports.
    task : Task
        What its labels mean.
    data : SiteData
        Its training and local evaluation splits, standardised with training statistics.
    """

    name: str
    task: Task
    data: SiteData


def load_site(node_config: Mapping[str, object], config: RunConfig) -> Site:
    """Load this node's data.

    A simulated hospital (node config ``partition-id``) rebuilds its partition of
    the built-in dataset from the run's data settings.

    Raises
    ------
    DataError
        If the node config names no data, or a partition that does not exist.
    """
    partition = node_config.get(NodeConfigKey.PARTITION_ID)
    if partition is None:
        raise DataError(
            "this SuperNode has no data configured: a simulated hospital needs "
            f"--node-config '{NodeConfigKey.PARTITION_ID}=N'"
        )
    # Imported here: only simulated hospitals need the simulation package.
    from simulations.federation import build_federation

    federation = build_federation(config.data)
    index = int(str(partition))
    if not 0 <= index < len(federation.hospitals):
        raise DataError(
            f"{NodeConfigKey.PARTITION_ID}={index} does not exist: the run has "
            f"{len(federation.hospitals)} hospitals (0 to {len(federation.hospitals) - 1})"
        )
    hospital = federation.hospitals[index]
    return Site(name=hospital.name, task=federation.task, data=hospital.site)
