"""Which data a hospital trains on, found from its node config or from a source passed in.

A real hospital reads its own file (node config written by ``fedcare hospital
start``). A simulation passes the apps a :class:`SiteSource` that hands each
virtual hospital its data (the built-in dataset's partitions or the user's own
files, both in the simulation package, which this code never imports). Every
hospital that reads a file under the federation's contract, real or virtual,
prepares it the same way (:func:`contract_site`): a real hospital splits its
rows with its own ``split-seed`` and ``eval-fraction`` (``site.toml``), never
with the run's, and every hospital scales features with the contract's public
ranges. Either way the privacy ledger knows the data by its fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fedcare.client.site_settings import SiteNode, SitePrivacy
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.data import (
    Examples,
    SiteData,
    Standardizer,
    dataset_fingerprint,
    prepare_site,
)
from fedcare.shared.errors import DataError
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.privacy import HistoryEntry
from fedcare.shared.tasks import Task

if TYPE_CHECKING:
    from fedcare.shared.contract import DataContract

SIMULATED_STATE_DIR = "hospitals"

_NO_DATA = (
    "this SuperNode has no data configured: start a hospital with "
    "`fedcare hospital start --config site.toml`"
)

_NO_SOURCE = (
    f"this SuperNode's node config names a simulated hospital ({NodeConfigKey.PARTITION_ID}) "
    "but no simulation passed its data: simulations run through `fedcare simulate`"
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
        Its training and local evaluation splits, standardised with training statistics.
    state : Path
        Folder of the hospital's own records: privacy ledger, audit log and the
        model's site-local parameters.
    dataset : str
        What the privacy ledger keeps this data's budget under.
    limits : SitePrivacy | None
        The hospital's own privacy limits (``None`` for a simulated hospital,
        which follows the run's settings).
    reserved : tuple[HistoryEntry, ...]
        What the hospital releases in the run before it trains (a DP fill value,
        :mod:`client.fill_values`): its DP-SGD plan leaves room for them.
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
    reserved: tuple[HistoryEntry, ...] = ()
    fingerprint: str = ""

    @property
    def ledger_key(self) -> str:
        """What the privacy ledger keys this data on: its fingerprint (the label if none)."""
        return self.fingerprint or self.dataset

    @property
    def min_count(self) -> int:
        """Fewest rows any class or reported group may have before metrics about it leave."""
        return (self.limits or SitePrivacy()).min_count


class SiteSource(Protocol):
    """Where virtual hospitals' data comes from, passed to the apps by a simulation.

    It must pickle small: Flower's simulation ships the ClientApp, and so the
    source, to its workers with every message.
    """

    def records(self, node_config: Mapping[str, object], config: RunConfig) -> tuple[str, Path]:
        """Return the hospital's name and records folder, known before its data is read."""
        ...

    def site(self, node_config: Mapping[str, object], config: RunConfig, run_id: str) -> Site:
        """Return the hospital's prepared data for run ``run_id``."""
        ...


def load_site(
    node_config: Mapping[str, object],
    config: RunConfig,
    run_id: str,
    source: SiteSource | None = None,
) -> Site:
    """Load this node's data.

    A real hospital (node config written by ``fedcare hospital start``) reads its
    own file and checks it against its contract, which must be the run's. A
    virtual hospital gets its data from ``source``, which the simulation passed.

    Raises
    ------
    DataError
        If the node config names no data (or a simulated hospital without a
        ``source``), the data breaks the contract, or the contract differs from
        the run's.
    """
    if NodeConfigKey.DATA_PATH in node_config:
        return _hospital_site(SiteNode.from_node_config(node_config), config, run_id)
    return _source(node_config, source).site(node_config, config, run_id)


def site_records(
    node_config: Mapping[str, object], config: RunConfig, source: SiteSource | None = None
) -> tuple[str, Path]:
    """Return the hospital's name and records folder, known before its data is read.

    Raises
    ------
    DataError
        If the node config names no hospital, and no simulation passed a ``source``.
    """
    if NodeConfigKey.DATA_PATH in node_config:
        node = SiteNode.from_node_config(node_config)
        return node.name, node.state
    return _source(node_config, source).records(node_config, config)


def _source(node_config: Mapping[str, object], source: SiteSource | None) -> SiteSource:
    """Return the simulation's source of a virtual hospital's data, or say what is missing."""
    if source is not None:
        return source
    if NodeConfigKey.PARTITION_ID in node_config:
        raise DataError(_NO_SOURCE)
    raise DataError(_NO_DATA)


def site_limits(node_config: Mapping[str, object]) -> SitePrivacy | None:
    """Return the hospital's own privacy limits, read before its data (``None`` if simulated)."""
    if NodeConfigKey.DATA_PATH in node_config:
        return SiteNode.from_node_config(node_config).privacy
    return None


def _hospital_site(node: SiteNode, config: RunConfig, run_id: str) -> Site:
    # Imported here: only real hospitals read files (pandas, pyarrow, Pillow).
    from fedcare.client.readers import read_site_data
    from fedcare.shared.contract import DataContract

    contract = DataContract.load(node.contract)
    check_run_contract(node.name, contract, config)
    return contract_site(
        node.name,
        read_site_data(node.data, contract),
        contract,
        config,
        state=node.state,
        dataset=node.dataset,
        run_id=run_id,
        limits=node.privacy,
    )


def check_run_contract(name: str, contract: DataContract, config: RunConfig) -> None:
    """Refuse a run whose contract is not the hospital's own.

    Raises
    ------
    DataError
        If the run carries no contract, or a different one (by fingerprint).
    """
    from fedcare.shared.contract import DataContract

    if not config.data.contract:
        raise DataError(
            f"{name}: the run carries no data contract; it is not meant for real hospitals"
        )
    expected = DataContract.parse(config.data.contract, source="the run's contract")
    if contract.fingerprint() != expected.fingerprint():
        raise DataError(
            f"{name}: its contract {contract.source} differs from the run's "
            f"({contract.fingerprint()[:12]} here, {expected.fingerprint()[:12]} in the run); "
            "both sides must use the federation's contract"
        )


def contract_site(  # noqa: PLR0913 - the hospital's data and where its records go
    name: str,
    data: Examples,
    contract: DataContract,
    config: RunConfig,
    *,
    state: Path,
    dataset: str,
    run_id: str,
    limits: SitePrivacy | None = None,
) -> Site:
    """Prepare a hospital's checked rows for a run, as every hospital that reads a file does.

    Its rows are split (with the hospital's own ``split-seed`` and
    ``eval-fraction`` when it has ``limits``, else the run's), their empty cells
    filled where the contract says so (DP fills booked in the hospital's ledger,
    :mod:`client.fill_values`) and scaled with the contract's public ranges.

    Raises
    ------
    DataError
        If the split leaves too few rows to train or evaluate.
    shared.errors.PrivacyBudgetExceededError
        If booking a DP fill would take the dataset past its cap.
    """
    from fedcare.client.fill_values import BookingPlace, hospital_fills, run_releases
    from fedcare.shared.run_model import run_task

    cap = epsilon_cap(config, limits)
    fingerprint = dataset_fingerprint(data, source=contract.fingerprint())
    # A real hospital splits its rows its own way: nothing here comes from the run.
    seed, eval_fraction = (
        (limits.split_seed, limits.eval_fraction)
        if limits is not None
        else (config.data.seed, config.data.eval_fraction)
    )
    booked = BookingPlace(state=state, ledger_key=fingerprint, label=dataset, run_id=run_id)
    prepared = prepare_site(
        data,
        contract.task(),
        scaler=Standardizer.from_bounds(contract.feature_bounds(), data.kind),
        eval_fraction=eval_fraction,
        seed=seed,
        site=name,
        fill=hospital_fills(contract, config, booked, cap_epsilon=cap),
    )
    return Site(
        name=name,
        task=run_task(config.training, contract.task()),
        data=prepared,
        state=state,
        dataset=dataset,
        limits=limits,
        reserved=run_releases(contract, config),
        fingerprint=fingerprint,
    )


def epsilon_cap(config: RunConfig, limits: SitePrivacy | None) -> float:
    """Return the most epsilon a hospital's dataset may reach.

    Its own limit, or the run's target for a simulated hospital (which has no
    limits of its own).
    """
    return limits.max_epsilon if limits is not None else config.privacy.target_epsilon


def simulated_state(config: RunConfig, name: str) -> Path:
    """Where a virtual hospital keeps its records: beside the run's report, one folder each."""
    return Path(config.output.out_dir) / SIMULATED_STATE_DIR / name


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
