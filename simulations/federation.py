"""A simulated federation: a held-out test set plus one data partition per virtual hospital.

Everything is a deterministic function of :class:`shared.config.data.DataSettings`, so the
aggregator (for its held-out evaluation) and each virtual hospital (for its own
partition) rebuild exactly the same split independently, as real parties would
each hold their own data.

Interaction data (treatment recommendation) has no test set: a model scores a
patient only through that patient's embedding, which stays at the patient's
hospital, so the aggregator could score no held-out patient. Its hospitals'
own evaluations are the federation's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedcare.shared.config.data import DataSettings, PartitionName
from fedcare.shared.data import (
    Examples,
    InputKind,
    SiteData,
    Standardizer,
    dataset_fingerprint,
    prepare_site,
    split_rows,
)
from fedcare.shared.errors import DataError
from fedcare.shared.tasks import CLASSIFICATION, Task
from fedcare.simulations.datasets import BuiltinDataset, load_builtin
from fedcare.simulations.partitioners import (
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
)

MIN_HOSPITAL_ROWS = 20
"""Fewest rows a skewed partitioner may give one virtual hospital."""


def hospital_name(partition_id: int) -> str:
    """Name of the virtual hospital holding partition ``partition_id`` (0-based)."""
    return f"hospital-{partition_id + 1}"


@dataclass(frozen=True)
class SimulatedHospital:
    """One virtual hospital: its name, its split scaled data, and its data's fingerprint.

    Attributes
    ----------
    name : str
        ``hospital-<n>``.
    site : SiteData
        What the hospital trains and evaluates on, scaled with the dataset's public bounds.
    fingerprint : str
        :func:`shared.data.dataset_fingerprint` of its rows: its privacy ledger key.
    """

    name: str
    site: SiteData
    fingerprint: str


@dataclass(frozen=True)
class SimulatedFederation:
    """Held-out test data and the hospitals' partitions of everything else.

    Attributes
    ----------
    task : Task
        The dataset's task.
    test : Examples | None
        Rows no hospital trains on, scaled with the dataset's public bounds as
        any hospital scales its patients; ``None`` for interaction
        data (see the module docstring).
    hospitals : tuple[SimulatedHospital, ...]
        One entry per hospital, in partition-id order.
    """

    task: Task
    test: Examples | None
    hospitals: tuple[SimulatedHospital, ...]

    @property
    def schema(self) -> Examples:
        """Examples showing the data's kind, features and shape: what the aggregator knows.

        The test set when there is one, else a hospital's training split.
        """
        return self.test if self.test is not None else self.hospitals[0].site.train


@lru_cache(maxsize=4)
def build_federation(settings: DataSettings) -> SimulatedFederation:
    """Split the built-in dataset into a test set and one partition per hospital.

    Cached per process: a virtual hospital asks for its partition on every
    message, and generating the synthetic films or vitals each time would put
    that work on every round's path. The arrays are shared; nobody mutates them.

    Raises
    ------
    DataError
        If a partition is too small or degenerate to train and evaluate on; the
        message names the hospital and the setting to change.
    """
    dataset = load_builtin(settings.dataset)
    test_seed, partition_seed, *site_seeds = np.random.SeedSequence(settings.seed).spawn(
        2 + settings.hospitals
    )
    if dataset.data.kind is InputKind.INTERACTIONS:
        return _patient_federation(settings, dataset, partition_seed, site_seeds)
    pool_rows, test_rows = split_rows(
        dataset.task.strata(dataset.data.labels),
        settings.test_fraction,
        np.random.default_rng(test_seed),
        stratify=dataset.task.stratified,
    )
    pool = dataset.data.subset(pool_rows)
    pool_sites = dataset.sites[pool_rows] if dataset.sites is not None else None
    parts = _partition(settings, dataset, pool, pool_sites, np.random.default_rng(partition_seed))
    scaler = Standardizer.from_bounds(dataset.bounds, dataset.data.kind)
    hospitals = tuple(
        _hospital(pid, pool.subset(rows), dataset, settings, site_seed)
        for pid, (rows, site_seed) in enumerate(zip(parts, site_seeds, strict=True))
    )
    test = dataset.data.subset(test_rows)
    return SimulatedFederation(task=dataset.task, test=scaler.transform(test), hospitals=hospitals)


def _patient_federation(
    settings: DataSettings,
    dataset: BuiltinDataset,
    partition_seed: np.random.SeedSequence,
    site_seeds: list[np.random.SeedSequence],
) -> SimulatedFederation:
    """Deal out patients, with all their interactions, and number each hospital's own."""
    data = dataset.data
    groups = _patient_groups(settings, dataset, np.random.default_rng(partition_seed))
    hospitals = []
    for pid, (group, site_seed) in enumerate(zip(groups, site_seeds, strict=True)):
        patients = np.sort(group)
        rows = np.flatnonzero(np.isin(data.features[:, 0], patients))
        local = np.stack(
            [np.searchsorted(patients, data.features[rows, 0]), data.features[rows, 1]], axis=1
        )
        own = Examples(
            local, data.labels[rows], data.feature_names, data.kind, patients=len(patients)
        )
        hospitals.append(_hospital(pid, own, dataset, settings, site_seed))
    return SimulatedFederation(task=dataset.task, test=None, hospitals=tuple(hospitals))


def _patient_groups(
    settings: DataSettings, dataset: BuiltinDataset, rng: np.random.Generator
) -> list[np.ndarray]:
    count, patients = settings.hospitals, dataset.data.patients
    if settings.partition is PartitionName.IID:
        return partition_iid(patients, count, rng)
    if settings.partition is PartitionName.QUANTITY:
        # The floor counts patients here, each with several interactions.
        return partition_quantity(
            patients, count, settings.dirichlet_alpha, rng, min_size=MIN_HOSPITAL_ROWS
        )
    raise DataError(
        f"partition '{settings.partition}' does not apply to {settings.dataset}, which deals "
        "out patients with all their interactions; use iid or quantity"
    )


def _hospital(
    partition_id: int,
    rows: Examples,
    dataset: BuiltinDataset,
    settings: DataSettings,
    seed: np.random.SeedSequence,
) -> SimulatedHospital:
    name = hospital_name(partition_id)
    site = prepare_site(
        rows,
        dataset.task,
        scaler=Standardizer.from_bounds(dataset.bounds, rows.kind),
        eval_fraction=settings.eval_fraction,
        seed=int(seed.generate_state(1)[0]),
        site=name,
    )
    return SimulatedHospital(
        name=name,
        site=site,
        fingerprint=dataset_fingerprint(rows, source=f"builtin:{settings.dataset}"),
    )


def _partition(
    settings: DataSettings,
    dataset: BuiltinDataset,
    pool: Examples,
    pool_sites: np.ndarray | None,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    count = settings.hospitals
    if settings.partition is PartitionName.IID:
        return partition_iid(len(pool), count, rng)
    if settings.partition is PartitionName.QUANTITY:
        return partition_quantity(
            len(pool), count, settings.dirichlet_alpha, rng, min_size=MIN_HOSPITAL_ROWS
        )
    if settings.partition is PartitionName.DIRICHLET:
        if dataset.task.kind not in CLASSIFICATION:
            raise DataError(
                f"partition 'dirichlet' skews class labels, but {settings.dataset} is a "
                f"{dataset.task.kind} dataset; use iid or quantity"
            )
        return partition_dirichlet(
            pool.labels, count, settings.dirichlet_alpha, rng, min_size=MIN_HOSPITAL_ROWS
        )
    if pool_sites is None:
        raise DataError(
            f"partition 'natural' needs a site column, and {settings.dataset} has none; "
            "use iid, dirichlet or quantity"
        )
    return partition_natural(pool_sites, count)
