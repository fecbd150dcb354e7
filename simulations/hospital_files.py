"""Write demo hospital files: one CSV per hospital plus the shared data contract.

A real federation starts from files each hospital already has. To try one (or to
test it) without patient data, this deals the built-in Breast Cancer Wisconsin
data out to hospitals with the simulation's label-skewed partitioner, as the files
hospitals would hold: ``<hospital>.csv`` with a patient id, 30 features and a
``diagnosis`` column, and ``contract.toml`` describing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from fedcare.shared.config.data import DataSettings
from fedcare.shared.data import FeatureBounds
from fedcare.shared.errors import DataError
from fedcare.simulations.datasets import load_builtin
from fedcare.simulations.federation import MIN_HOSPITAL_ROWS, hospital_name
from fedcare.simulations.partitioners import partition_dirichlet

LABEL = "diagnosis"
ID_COLUMN = "patient_id"
CLASSES = ("benign", "malignant")
CONTRACT_FILE = "contract.toml"


@dataclass(frozen=True)
class DemoFiles:
    """Where the demo files went."""

    contract: Path
    hospitals: dict[str, Path]


def _column(name: str) -> str:
    return name.replace(" ", "_")


def demo_contract(feature_names: tuple[str, ...], bounds: FeatureBounds) -> dict[str, Any]:
    """Return the demo files' contract: the published ranges, each on a log scale.

    They are the public bounds simulated hospitals scale with
    (:mod:`simulations.datasets`), so a simulated run's model scales the demo
    files' patients exactly as it was trained.
    """
    log = bounds.log if bounds.log is not None else np.zeros(len(feature_names), dtype=bool)
    features = {}
    for name, low, high, logged in zip(feature_names, bounds.low, bounds.high, log, strict=True):
        feature: dict[str, Any] = {"type": "float", "min": float(low), "max": float(high)}
        if logged:
            feature["scale"] = "log"  # sizes and shape measures spanning orders of magnitude
        features[_column(name)] = feature
    return {
        "name": "breast-cancer-diagnosis",
        "task": "binary",
        "label": LABEL,
        "classes": list(CLASSES),
        "positive_class": CLASSES[1],
        "id_columns": [ID_COLUMN],
        "missing": "reject",
        "min_rows": 30,
        "min_rows_per_class": 3,
        "features": features,
    }


def write_demo_hospitals(folder: Path, settings: DataSettings) -> DemoFiles:
    """Write ``settings.hospitals`` hospital CSV files and their contract into ``folder``.

    Every row goes to some hospital (a deployment has no central test set), and
    hospitals hold raw, unscaled rows, as they would in real life.
    """
    dataset = load_builtin(settings.dataset)
    rng = np.random.default_rng(settings.seed)
    parts = partition_dirichlet(
        dataset.data.labels,
        settings.hospitals,
        settings.dirichlet_alpha,
        rng,
        min_size=2 * MIN_HOSPITAL_ROWS,
    )
    folder.mkdir(parents=True, exist_ok=True)
    if dataset.bounds is None:
        raise DataError(f"{settings.dataset} has no published feature ranges for a contract")
    contract = demo_contract(dataset.data.feature_names, dataset.bounds)
    contract_path = folder / CONTRACT_FILE
    contract_path.write_text(tomli_w.dumps(contract), encoding="utf-8")
    columns = [_column(name) for name in dataset.data.feature_names]
    hospitals = {}
    for partition_id, rows in enumerate(parts):
        name = hospital_name(partition_id)
        frame = pd.DataFrame(dataset.data.features[rows].astype(float), columns=columns)
        frame.insert(0, ID_COLUMN, [f"{name}-{i:05d}" for i in range(len(rows))])
        frame[LABEL] = [CLASSES[int(label)] for label in dataset.data.labels[rows]]
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False, float_format="%.6g")
        hospitals[name] = path
    return DemoFiles(contract=contract_path, hospitals=hospitals)


def site_toml(
    *,
    name: str,
    aggregator: str,
    credentials: Path,
    data: Path,
    contract: Path,
    runtime_port: int,
    max_epsilon: float = 3.0,
    require_secure_aggregation: bool = True,
) -> dict[str, Any]:
    """Return a hospital's ``site.toml`` content (see :mod:`client.site_settings`)."""
    return {
        "hospital": {
            "name": name,
            "aggregator": aggregator,
            "credentials": str(credentials),
            "data": str(data),
            "contract": str(contract),
            "device": "auto",
            "state": "state",
            "runtime-port": runtime_port,
        },
        "privacy": {
            "max-epsilon": max_epsilon,
            "delta": 1e-5,
            "require-secure-aggregation": require_secure_aggregation,
            "min-count": 10,
            "min-participants": 3,
            "split-seed": 0,
            "eval-fraction": 0.25,
            "min-batch-size": 16,
        },
    }


CREDENTIALS_DIR = "credentials"
"""Each demo hospital's credentials folder, next to its ``site.toml``."""


def write_demo_sites(
    files: DemoFiles, *, aggregator: str, first_port: int = 9094
) -> dict[str, Path]:
    """Write ``<out>/<hospital>/site.toml`` for each demo hospital; return their paths.

    Each names its own credentials folder (``<out>/<hospital>/credentials``), where
    ``fedcare hospital keygen`` puts the hospital's key pair. Paths inside are
    absolute, so each file works from any working directory.
    """
    sites = {}
    for offset, (name, data) in enumerate(sorted(files.hospitals.items())):
        folder = data.parent / name
        folder.mkdir(exist_ok=True)
        content = site_toml(
            name=name,
            aggregator=aggregator,
            credentials=(folder / CREDENTIALS_DIR).resolve(),
            data=data.resolve(),
            contract=files.contract.resolve(),
            runtime_port=first_port + offset,
        )
        path = folder / "site.toml"
        path.write_text(tomli_w.dumps(content), encoding="utf-8")
        sites[name] = path
    return sites
