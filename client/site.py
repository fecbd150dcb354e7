"""Which data a hospital trains on, found from its node config, and how it prepares it.

A real hospital splits its rows with its own ``split-seed`` and ``eval-fraction``
(``site.toml``), never with the run's, and scales features with its contract's
public ranges. A simulated hospital takes all of that from the simulation's own
settings. Either way the privacy ledger knows the data by its fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedcare.client.site_settings import SiteNode, SitePrivacy
from fedcare.shared.config import RunConfig
from fedcare.shared.data import SiteData, Standardizer, dataset_fingerprint, prepare_site
from fedcare.shared.errors import DataError
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.tasks import Task

SIMULATED_STATE_DIR = "hospitals"

_NO_DATA = (
    "this SuperNode has no data configured: start a hospital with `fedcare hospital start "
    f"--config site.toml`, or give a simulated one --node-config '{NodeConfigKey.PARTITION_ID}=N'"
)


@dataclass(frozen=True)
class Site:
    """A hospital's name, task, prepared data and own privacy limits.

    Attributes
    ----------
    name : str
        How the hospital is named in reports.
    task : Task
        What the model learns from its data (:func:`shared.models.model_task`).
    data : SiteData
        Its training and local evaluation splits, scaled with public bounds.
    state : Path
        Folder of the hospital's own records: privacy ledger, audit log and the
        model's site-local parameters.
    dataset : str
        The hospital's label for this data (the privacy ledger's second key).
    limits : SitePrivacy | None
        The hospital's own privacy limits (``None`` for a simulated hospital,
        which follows the run's settings).
    fingerprint : str
        :func:`shared.data.dataset_fingerprint` of the data: the privacy
        ledger's key, so the budget follows the rows whatever their label.
    """

    name: str
    task: Task
    data: SiteData
    state: Path
    dataset: str
    limits: SitePrivacy | None = None
    fingerprint: str = ""

    @property
    def ledger_key(self) -> str:
        """What the privacy ledger keys this data on: its fingerprint (the label if none)."""
        return self.fingerprint or self.dataset

    @property
    def min_count(self) -> int:
        """Fewest rows any class or reported group may have before metrics about it leave."""
        return (self.limits or SitePrivacy()).min_count


def load_site(node_config: Mapping[str, object], config: RunConfig) -> Site:
    """Load this node's data.

    A real hospital (node config written by ``fedcare hospital start``) reads its
    own file and checks it against its contract, which must be the run's. A
    simulated hospital (node config ``partition-id``) rebuilds its partition of
    the built-in dataset from the run's data settings.

    Raises
    ------
    DataError
        If the node config names no data, the data breaks the contract, or the
        contract differs from the run's.
    """
    if NodeConfigKey.DATA_PATH in node_config:
        return _hospital_site(SiteNode.from_node_config(node_config), config)
    if NodeConfigKey.PARTITION_ID in node_config:
        return _simulated_site(int(str(node_config[NodeConfigKey.PARTITION_ID])), config)
    raise DataError(_NO_DATA)


def site_records(node_config: Mapping[str, object], config: RunConfig) -> tuple[str, Path]:
    """The hospital's name and records folder, known before its data is read.

    Raises
    ------
    DataError
        If the node config names neither a hospital nor a simulated partition.
    """
    if NodeConfigKey.DATA_PATH in node_config:
        node = SiteNode.from_node_config(node_config)
        return node.name, node.state
    if NodeConfigKey.PARTITION_ID in node_config:
        from fedcare.simulations.federation import hospital_name

        name = hospital_name(int(str(node_config[NodeConfigKey.PARTITION_ID])))
        return name, simulated_state(config, name)
    raise DataError(_NO_DATA)


def site_limits(node_config: Mapping[str, object]) -> SitePrivacy | None:
    """Return the hospital's own privacy limits, read before its data (``None`` if simulated)."""
    if NodeConfigKey.DATA_PATH in node_config:
        return SiteNode.from_node_config(node_config).privacy
    return None


def _hospital_site(node: SiteNode, config: RunConfig) -> Site:
    # Imported here: only real hospitals read files (pandas, pyarrow, Pillow).
    from fedcare.client.readers import read_site_data
    from fedcare.shared.contract import DataContract
    from fedcare.shared.run_model import run_task

    if not config.data.contract:
        raise DataError(
            f"{node.name}: the run carries no data contract; it is not meant for real hospitals"
        )
    contract = DataContract.load(node.contract)
    expected = DataContract.parse(config.data.contract, source="the run's contract")
    if contract.fingerprint() != expected.fingerprint():
        raise DataError(
            f"{node.name}: its contract {node.contract} differs from the run's "
            f"({contract.fingerprint()[:12]} here, {expected.fingerprint()[:12]} in the run); "
            "both sides must use the federation's contract"
        )
    data = read_site_data(node.data, contract)
    # The hospital's own split and public scaling: nothing here comes from the run.
    prepared = prepare_site(
        data,
        contract.task(),
        scaler=Standardizer.from_bounds(contract.feature_bounds(), data.kind),
        eval_fraction=node.privacy.eval_fraction,
        seed=node.privacy.split_seed,
        site=node.name,
    )
    return Site(
        name=node.name,
        task=run_task(config.training, contract.task()),
        data=prepared,
        state=node.state,
        dataset=node.dataset,
        limits=node.privacy,
        fingerprint=dataset_fingerprint(data, source=contract.fingerprint()),
    )


def hospital_fingerprint(node: SiteNode) -> str:
    """Return the fingerprint the privacy ledger keys this hospital's data on (reads the data).

    Raises
    ------
    DataError
        If the data or the contract cannot be read, or they disagree.
    """
    from fedcare.client.readers import read_site_data
    from fedcare.shared.contract import DataContract

    contract = DataContract.load(node.contract)
    data = read_site_data(node.data, contract)
    return dataset_fingerprint(data, source=contract.fingerprint())


def _simulated_site(index: int, config: RunConfig) -> Site:
    # Imported here: only simulated hospitals need the simulation package.
    from fedcare.shared.run_model import run_task
    from fedcare.simulations.federation import build_federation

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


def simulated_state(config: RunConfig, name: str) -> Path:
    """Where a virtual hospital keeps its records: beside the run's report, one folder each."""
    return Path(config.output.out_dir) / SIMULATED_STATE_DIR / name
