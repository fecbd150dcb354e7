"""A federation of the user's own files: one virtual hospital per file, each a real hospital's twin.

``fedcare simulate --contract contract.toml --data a.csv --data b.csv ...`` rehearses a
federation on copies of the hospitals' files before anything is deployed. Every
virtual hospital reads its file with the hospital's reader and checks it against
the contract (:func:`client.readers.read_site_data`), then prepares it exactly as
a real hospital does (:func:`client.site.contract_site`: its split, its fill
values, DP ones booked in its own ledger, its scaling), trains with DP-SGD and
answers through the same egress guard and SecAgg+. :class:`OwnData` is the data
source the simulation passes to the apps (:class:`client.site.SiteSource`).

The aggregator's side of the simulation, which a deployment does not have,
gets a test set and the pooled and local-only baselines: the test rows are the
``--test`` file, read and checked like a hospital's and prepared as an unseen
hospital would prepare it (its own fill means and scaling), or without one the
hospitals' own held-out rows, which no hospital trains on. The baselines
release nothing, so their empty cells take exact means rather than DP ones.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedcare.client.readers import read_site_data
from fedcare.client.site import Site, check_run_contract, contract_site, simulated_state
from fedcare.server.reference import DataReference
from fedcare.shared.config.data import DataSettings
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.contract import ClassMinimumScope, DataContract
from fedcare.shared.data import Examples, Standardizer, dataset_fingerprint, prepare_site
from fedcare.shared.errors import ConfigError, DataError
from fedcare.shared.imputation import dp_fill_features, exact_means, public_fills
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.models import check_model_input
from fedcare.shared.tasks import TaskKind
from fedcare.simulations.federation import SimulatedFederation, SimulatedHospital
from fedcare.simulations.reference import federation_reference

logger = logging.getLogger(__name__)

_COUNT_RULES = frozenset(
    {
        "too-few-rows",
        "single-class",
        "too-few-rows-in-class",
        "too-few-patients",
        "too-few-patients-in-class",
        "too-few-images",
        "too-few-images-in-class",
    }
)
"""The readers' rules a hospital cut too small from one file breaks."""


@dataclass(frozen=True)
class HospitalFile:
    """One virtual hospital's data: its name, its file (or image folder), what errors call it.

    Attributes
    ----------
    name : str
        The hospital's name in the report, and its records folder's.
    path : Path
        Its file or image folder.
    origin : str
        What an error names instead of ``path`` when the file was cut from the
        user's own (``all.csv (site inst-3)``); empty when ``path`` is the user's.
    """

    name: str
    path: Path
    origin: str = ""

    def describe(self) -> str:
        """Return what errors and logs call this hospital's data."""
        return self.origin or str(self.path)


@dataclass(frozen=True)
class OwnData:
    """The user's files as a simulation's data source (small: it travels with every message).

    Attributes
    ----------
    contract_text : str
        The federation's contract, as written.
    contract_source : str
        Its file, for errors.
    hospitals : tuple[HospitalFile, ...]
        One file per virtual hospital, in partition-id order.
    test : Path | None
        Held-out test rows for the report, or ``None`` (the hospitals' own
        held-out rows).
    """

    contract_text: str
    contract_source: str
    hospitals: tuple[HospitalFile, ...]
    test: Path | None = None

    def contract(self) -> DataContract:
        """Return the parsed contract.

        Raises
        ------
        shared.contract.ContractError
            If it breaks a rule (naming the file and the field).
        """
        return _contract(self.contract_text, self.contract_source)

    def check(self, config: RunConfig) -> SimulatedFederation:
        """Check everything before the simulation starts, and return the federation it runs.

        Raises
        ------
        ConfigError
            If the run's hospitals or model do not fit the files.
        DataError
            If a file breaks the contract or leaves a hospital too few rows (naming
            the file), or the federation misses the contract's class minimum.
        """
        if config.data.hospitals != len(self.hospitals):
            raise ConfigError(
                "hospitals",
                f"the data gives {len(self.hospitals)} hospitals, not {config.data.hospitals}",
            )
        training = config.training
        check_model_input(training.model, self.contract().input_kind(), training.model_version)
        return self.federation(config)

    def federation(self, config: RunConfig) -> SimulatedFederation:
        """Return every hospital's prepared rows and the report's test rows (cached per process)."""
        return _federation(self, config.data)

    def reference(self, config: RunConfig) -> DataReference:
        """Return what the simulation's aggregator knows: the test rows and the baselines."""
        return federation_reference(config, self.federation(config))

    def records(self, node_config: Mapping[str, object], config: RunConfig) -> tuple[str, Path]:
        """Return the virtual hospital's name and records folder."""
        name = self._hospital(node_config).name
        return name, simulated_state(config, name)

    def site(self, node_config: Mapping[str, object], config: RunConfig, run_id: str) -> Site:
        """Return the virtual hospital's data for a run, prepared as a real hospital's."""
        hospital = self._hospital(node_config)
        contract = self.contract()
        check_run_contract(hospital.name, contract, config)
        return contract_site(
            hospital.name,
            _read(hospital, self.contract_text, self.contract_source),
            contract,
            config,
            state=simulated_state(config, hospital.name),
            dataset=hospital.name,
            run_id=run_id,
        )

    def _hospital(self, node_config: Mapping[str, object]) -> HospitalFile:
        index = int(str(node_config.get(NodeConfigKey.PARTITION_ID, -1)))
        if not 0 <= index < len(self.hospitals):
            raise DataError(
                f"{NodeConfigKey.PARTITION_ID}={index} does not exist: the simulation has "
                f"{len(self.hospitals)} hospitals (0 to {len(self.hospitals) - 1})"
            )
        return self.hospitals[index]


@lru_cache(maxsize=4)
def _contract(text: str, source: str) -> DataContract:
    return DataContract.parse(text, source=source)


@lru_cache(maxsize=64)
def _read(hospital: HospitalFile, contract_text: str, contract_source: str) -> Examples:
    """Read a hospital's file with the hospital's reader (cached: every message asks again).

    Raises
    ------
    DataError
        The reader's, naming the user's file where the hospital's was cut from it.
    """
    try:
        return read_site_data(hospital.path, _contract(contract_text, contract_source))
    except DataError as error:
        if not hospital.origin:
            raise
        message = str(error).replace(str(hospital.path), hospital.origin)
        rules = {str(problem.rule) for problem in getattr(error, "problems", ())}
        if rules & _COUNT_RULES:
            message += (
                "\n(this hospital was cut from one file: --hospitals N makes fewer, larger ones)"
            )
        raise DataError(message) from None


@lru_cache(maxsize=4)
def _federation(data: OwnData, settings: DataSettings) -> SimulatedFederation:
    contract = data.contract()
    hospitals = tuple(_twin(data, hospital, contract, settings) for hospital in data.hospitals)
    _check_federation_classes(contract, data.hospitals, hospitals)
    for hospital in hospitals:
        logger.info(
            "%s: %s train / %s eval",
            hospital.name,
            len(hospital.site.train),
            len(hospital.site.evaluation),
        )
    if data.test is not None:
        test = _unseen(read_site_data(data.test, contract), contract)
    else:
        test = _concatenate([hospital.site.evaluation for hospital in hospitals])
    return SimulatedFederation(task=contract.task(), test=test, hospitals=hospitals)


def _twin(
    data: OwnData, hospital: HospitalFile, contract: DataContract, settings: DataSettings
) -> SimulatedHospital:
    """Return a virtual hospital's aggregator-side twin: the same split, exact-mean fills."""
    examples = _read(hospital, data.contract_text, data.contract_source)
    site = prepare_site(
        examples,
        contract.task(),
        scaler=Standardizer.from_bounds(contract.feature_bounds(), examples.kind),
        eval_fraction=settings.eval_fraction,
        seed=settings.seed,
        site=hospital.describe(),
        fill=lambda train: _exact_fills(train, contract),
    )
    fingerprint = dataset_fingerprint(examples, source=contract.fingerprint())
    return SimulatedHospital(name=hospital.name, site=site, fingerprint=fingerprint)


def _exact_fills(data: Examples, contract: DataContract) -> dict[str, float]:
    return public_fills(contract.features) | exact_means(data, dp_fill_features(contract.features))


def _unseen(data: Examples, contract: DataContract) -> Examples:
    """Prepare test rows as a hospital that took no part would: its own fills, public scaling."""
    filled = data.filled(_exact_fills(data, contract))
    return Standardizer.from_bounds(contract.feature_bounds(), filled.kind).transform(filled)


def _concatenate(parts: list[Examples]) -> Examples:
    return Examples(
        features=np.concatenate([part.features for part in parts]),
        labels=np.concatenate([part.labels for part in parts]),
        feature_names=parts[0].feature_names,
        kind=parts[0].kind,
    )


def _check_federation_classes(
    contract: DataContract,
    files: tuple[HospitalFile, ...],
    hospitals: tuple[SimulatedHospital, ...],
) -> None:
    """Refuse a federation whose hospitals together miss a federation-wide class minimum.

    Raises
    ------
    DataError
        Naming the class, its count across the files and the minimum.
    """
    if contract.min_rows_per_class_scope is not ClassMinimumScope.FEDERATION:
        return
    if contract.task_kind is TaskKind.REGRESSION:
        return
    labels = np.concatenate(
        [np.concatenate([h.site.train.labels, h.site.evaluation.labels]) for h in hospitals]
    )
    counts = _class_counts(contract, labels)
    for name, count in counts.items():
        if count < contract.min_rows_per_class:
            raise DataError(
                f"class '{name}' has {count} rows across the {len(files)} hospitals' files; the "
                f"contract {contract.source} needs at least {contract.min_rows_per_class} in the "
                'federation (min_rows_per_class_scope = "federation")'
            )


def _class_counts(contract: DataContract, labels: np.ndarray) -> dict[str, int]:
    """Rows of each class, from labels as the contract's task trains on them."""
    if contract.task_kind is TaskKind.BINARY:
        positive = int(np.count_nonzero(labels == 1.0))
        negative = next(name for name in contract.classes if name != contract.positive_class)
        return {str(contract.positive_class): positive, negative: len(labels) - positive}
    counts = np.bincount(labels.astype(np.int64), minlength=len(contract.classes))
    return {name: int(count) for name, count in zip(contract.classes, counts, strict=True)}
