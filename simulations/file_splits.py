"""One file shared out among virtual hospitals: by its site column, or by a partitioner.

``fedcare simulate --data FILE --site-column NAME`` keeps each site's rows together
(a natural split: one hospital per site, or with ``--hospitals N`` whole sites
grouped into N hospitals); ``--partition iid|dirichlet|quantity --hospitals N``
deals the rows out. Either way every virtual hospital gets a file of its own
in a private scratch folder and reads it with the hospital's reader, so it is
checked as a real hospital's file would be (:mod:`simulations.own_data`).

A table is split by row and a sequence file by patient (a stay is never cut),
both keeping the file's format and cells exactly as written, less the site
column. Images are read and checked whole with the hospital's reader first,
then dealt out image by image into one ``.npz`` per hospital.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedcare.client.readers import read_site_data
from fedcare.client.readers.columns import Kind, Layout, Table
from fedcare.client.readers.file_formats import read_table
from fedcare.client.readers.problems import FileCheckError, Problem
from fedcare.shared.config.data import PartitionName
from fedcare.shared.contract import DataContract
from fedcare.shared.data import InputKind
from fedcare.shared.errors import DataError
from fedcare.shared.tasks import CLASSIFICATION, TaskKind
from fedcare.simulations.federation import MIN_HOSPITAL_ROWS, hospital_name
from fedcare.simulations.own_data import HospitalFile
from fedcare.simulations.partitioners import (
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SplitPlan:
    """How one file is shared out.

    Attributes
    ----------
    site_column : str | None
        The column naming each row's site (a natural split), or ``None``.
    partition : PartitionName
        The partitioner without a site column: iid, dirichlet or quantity.
    hospitals : int | None
        How many hospitals; with a site column ``None`` means one per site.
    alpha : float
        Dirichlet concentration of ``dirichlet`` and ``quantity``.
    seed : int
        Seed of the partitioner.
    """

    site_column: str | None
    partition: PartitionName
    hospitals: int | None
    alpha: float
    seed: int


class _SplitError(FileCheckError[Problem]):
    _agreement = "data contract"
    _loaded = "row"


def split_file(
    path: Path, contract: DataContract, plan: SplitPlan, folder: Path
) -> tuple[HospitalFile, ...]:
    """Write one file per virtual hospital into ``folder`` and return them.

    Raises
    ------
    DataError
        If the file cannot be read, lacks the site column, a site is blank for some
        rows, or the partitioner cannot give every hospital enough rows; naming
        the file.
    """
    if contract.input_kind() is InputKind.IMAGES:
        return _split_images(path, contract, plan, folder)
    rows = _RowFile.read(path, contract, plan.site_column)
    units, labels, sites = rows.units(contract, plan.site_column)
    groups, names = _groups(path, contract, plan, labels, sites)
    hospitals = []
    for name, group in zip(names, groups, strict=True):
        target = folder / f"{name}{path.suffix.lower()}"
        rows.write(np.sort(np.concatenate([units[unit] for unit in group])), target)
        hospitals.append(HospitalFile(name=name, path=target, origin=f"{path} ({name})"))
    return tuple(hospitals)


def _groups(
    path: Path,
    contract: DataContract,
    plan: SplitPlan,
    labels: np.ndarray,
    sites: np.ndarray | None,
) -> tuple[list[np.ndarray], list[str]]:
    """Each hospital's units (rows, patients or images) and its name."""
    if sites is None:
        count = plan.hospitals or 1
        rng = np.random.default_rng(plan.seed)
        parts = _partition(path, contract, plan, labels, count, rng)
        return parts, [hospital_name(index) for index in range(count)]
    site_names = np.unique(sites)
    count = plan.hospitals or len(site_names)
    parts = partition_natural(sites, count)
    names = []
    for index, part in enumerate(parts):
        held = np.unique(sites[part])
        names.append(_site_name(plan, held[0]) if len(held) == 1 else hospital_name(index))
    if len(set(names)) < len(names):
        raise DataError(
            f"{path}: column '{plan.site_column}': two sites give the same hospital name once "
            "characters other than letters, digits, '.', '_' and '-' are replaced; recode them"
        )
    return parts, names


def _site_name(plan: SplitPlan, site: str) -> str:
    return f"{plan.site_column}-{_UNSAFE.sub('_', site)}"


def _partition(
    path: Path,
    contract: DataContract,
    plan: SplitPlan,
    labels: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    n_units = len(labels)
    if plan.partition is PartitionName.NATURAL:
        raise DataError(
            f"{path}: partition 'natural' needs the column naming each row's site: give it "
            "with --site-column, or use iid, dirichlet or quantity"
        )
    try:
        if plan.partition is PartitionName.IID:
            return partition_iid(n_units, count, rng)
        if plan.partition is PartitionName.QUANTITY:
            return partition_quantity(n_units, count, plan.alpha, rng, min_size=MIN_HOSPITAL_ROWS)
        if contract.task().kind not in CLASSIFICATION:
            raise DataError(
                "partition 'dirichlet' skews class labels, but the contract's task is "
                f"{contract.task_kind}; use iid or quantity"
            )
        return partition_dirichlet(labels, count, plan.alpha, rng, min_size=MIN_HOSPITAL_ROWS)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None


@dataclass(frozen=True)
class _RowFile:
    """A CSV or Parquet file as split: its cells as written, and the columns the split reads."""

    path: Path
    table: Table
    cells: pd.DataFrame | pa.Table
    site_column: str | None

    @classmethod
    def read(cls, path: Path, contract: DataContract, site_column: str | None) -> _RowFile:
        needed = [contract.label]
        if contract.sequences is not None:
            needed.append(contract.sequences.id_column)
        if site_column is not None:
            needed.append(site_column)
        layout = Layout(
            columns=tuple(dict.fromkeys(needed)),
            kinds=dict.fromkeys(needed, Kind.TEXT),
            count_fields=contract.sequences is None,
            parquet_as_text=True,
            agreement="contract",
            unsupported_hint="fedcare splits .csv, .parquet and .pq files, not '{suffix}'",
            lines_as_rows=contract.sequences is None,
        )
        table = read_table(path, layout, _SplitError)
        absent = [name for name in layout.columns if name not in table.columns]
        if absent:
            role = "--site-column" if absent[0] == site_column else "contract"
            raise DataError(f"{path}: has no column '{absent[0]}' (named by the {role})")
        if path.suffix.lower() == ".csv":
            cells: pd.DataFrame | pa.Table = pd.read_csv(
                path, dtype=str, keep_default_na=False, index_col=False
            )
        else:
            cells = pq.ParquetFile(path).read()
        return cls(path, table, cells, site_column)

    def units(
        self, contract: DataContract, site_column: str | None
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
        """Return each unit's rows (a row, or a patient's rows), its label and its site."""
        n_rows = self.table.n_rows
        if contract.sequences is None:
            keys = np.arange(n_rows)
        else:
            keys = self.table.columns[contract.sequences.id_column].values
        codes, _ = pd.factorize(pd.Series(keys), sort=True)
        order = np.argsort(codes, kind="stable")
        units = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
        labels = self.table.columns[contract.label].values
        unit_labels = np.array([labels[rows[0]] for rows in units], dtype=object)
        if site_column is None:
            return units, unit_labels, None
        return units, unit_labels, self._unit_sites(units, site_column)

    def _unit_sites(self, units: list[np.ndarray], site_column: str) -> np.ndarray:
        column = self.table.columns[site_column]
        blank = int(np.count_nonzero(column.missing))
        if blank:
            raise DataError(
                f"{self.path}: column '{site_column}' (the --site-column): {blank} rows name no "
                "site; every row must name its site"
            )
        values = column.values
        mixed = sum(len(set(values[rows].tolist())) > 1 for rows in units)
        if mixed:
            raise DataError(
                f"{self.path}: column '{site_column}' (the --site-column): {mixed} patients have "
                "rows from more than one site; a patient's stay belongs to one site"
            )
        return np.array([values[rows[0]] for rows in units], dtype=object)

    def write(self, rows: np.ndarray, target: Path) -> None:
        """Write ``rows`` of the file, less the site column, to ``target`` (same format)."""
        drop = [self.site_column] if self.site_column else []
        if isinstance(self.cells, pd.DataFrame):
            self.cells.iloc[rows].drop(columns=drop).to_csv(target, index=False)
        else:
            pq.write_table(self.cells.take(pa.array(rows)).drop_columns(drop), target)


def _split_images(
    path: Path, contract: DataContract, plan: SplitPlan, folder: Path
) -> tuple[HospitalFile, ...]:
    if plan.site_column is not None:
        raise DataError(
            f"{path}: images have no site column; give one .npz file or class folder per "
            "hospital with --data, or deal them out with --partition"
        )
    images = read_site_data(path, contract)
    labels = _class_indices(contract, images.labels)
    groups, names = _groups(path, contract, plan, labels, None)
    hospitals = []
    for name, group in zip(names, groups, strict=True):
        target = folder / f"{name}.npz"
        np.savez(target, train_images=images.features[group], train_labels=labels[group])
        hospitals.append(HospitalFile(name=name, path=target, origin=f"{path} ({name})"))
    return tuple(hospitals)


def _class_indices(contract: DataContract, labels: np.ndarray) -> np.ndarray:
    """Turn labels as a task trains on them back into class indices (positions in ``classes``)."""
    if contract.task_kind is TaskKind.BINARY:
        positive = contract.classes.index(str(contract.positive_class))
        return np.where(labels == 1.0, positive, 1 - positive).astype(np.int64)
    return labels.astype(np.int64)
