"""The built-in datasets as a simulation's data source: one partition per virtual hospital.

``fedcare simulate`` without ``--data`` (and ``flwr run .``, :mod:`simulations.flower_app`)
passes the apps a :class:`BuiltinData`: each virtual hospital, numbered by its node
config's ``partition-id``, rebuilds its partition of the built-in dataset from the
run's data settings (:func:`simulations.federation.build_federation`), and the
aggregator gets the dataset's held-out test set and baselines
(:func:`simulations.reference.simulated_reference`). The production apps take
these as arguments (:class:`client.site.SiteSource`,
:data:`server.server_app.ReferenceSource`) and never import this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedcare.client.site import Site, simulated_state
from fedcare.server.reference import DataReference
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import DataError
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.run_model import run_task
from fedcare.simulations.federation import build_federation, hospital_name
from fedcare.simulations.reference import simulated_reference


@dataclass(frozen=True)
class BuiltinData:
    """The built-in dataset's partitions as a simulation's data source.

    It holds nothing (the run's data settings say which dataset and how it is
    shared out), so it pickles small: Flower ships it to the simulation's
    workers with every message.
    """

    def records(self, node_config: Mapping[str, object], config: RunConfig) -> tuple[str, Path]:
        """Return the virtual hospital's name and records folder.

        Raises
        ------
        DataError
            If the node config has no ``partition-id``.
        """
        name = hospital_name(_partition(node_config))
        return name, simulated_state(config, name)

    def site(self, node_config: Mapping[str, object], config: RunConfig, run_id: str) -> Site:
        """Return the virtual hospital's partition of the built-in dataset.

        Raises
        ------
        DataError
            If the node config has no ``partition-id`` or names one the run does
            not have, or the data settings cannot give every hospital enough rows.
        """
        index = _partition(node_config)
        federation = build_federation(config.data)
        if not 0 <= index < len(federation.hospitals):
            raise DataError(
                f"{NodeConfigKey.PARTITION_ID}={index} does not exist: the run has "
                f"{len(federation.hospitals)} hospitals (0 to {len(federation.hospitals) - 1})"
            )
        hospital = federation.hospitals[index]
        return Site(
            name=hospital.name,
            task=run_task(config.training, federation.task),
            data=hospital.site,
            state=simulated_state(config, hospital.name),
            dataset=hospital.name,
            fingerprint=hospital.fingerprint,
        )

    def reference(self, config: RunConfig) -> DataReference:
        """Return the built-in dataset's held-out test set and baselines for the aggregator.

        Raises
        ------
        DataError
            If the data settings cannot give every hospital enough rows.
        """
        return simulated_reference(config)


def _partition(node_config: Mapping[str, object]) -> int:
    if NodeConfigKey.PARTITION_ID not in node_config:
        raise DataError(
            f"a virtual hospital's node config needs {NodeConfigKey.PARTITION_ID} "
            "(Flower's simulation sets it)"
        )
    return int(str(node_config[NodeConfigKey.PARTITION_ID]))
