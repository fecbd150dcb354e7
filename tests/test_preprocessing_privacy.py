"""Preprocessing inside the guarantee: public scaling, the hospital's own split, the data's name."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.shared.config.data import DatasetName, DataSettings, PartitionName
from fedcare.shared.data import (
    Examples,
    FeatureBounds,
    InputKind,
    Standardizer,
    dataset_fingerprint,
    prepare_site,
)
from fedcare.shared.tasks import Task, TaskKind
from fedcare.simulations.datasets import load_builtin
from fedcare.simulations.federation import build_federation

BINARY = Task(TaskKind.BINARY)
BOUNDS = FeatureBounds(low=np.array([0.0, 0.0]), high=np.array([10.0, 1000.0]))


def _rows(n: int, seed: int) -> Examples:
    rng = np.random.default_rng(seed)
    features = np.stack([rng.uniform(0, 10, n), rng.lognormal(4, 1, n)], axis=1)
    return Examples(
        features.astype(np.float32), rng.integers(0, 2, n).astype(np.float32), ("a", "b")
    )


def test_one_patient_never_changes_another_patients_scaled_inputs() -> None:
    data = _rows(80, 0)
    scaler = Standardizer.from_bounds(BOUNDS, InputKind.TABLE)
    outlier = data.features.copy()
    outlier[0] = [10.0, 1e9]  # one patient far outside the others (clipped to the bounds)
    scaled = scaler.transform(data).features
    neighbour = scaler.transform(data.with_features(outlier)).features
    assert np.array_equal(scaled[1:], neighbour[1:])
    assert np.abs(neighbour).max() <= 3.0 + 1e-5


def test_log_scaled_features_map_their_public_range_onto_minus_three_to_three() -> None:
    bounds = FeatureBounds(BOUNDS.low, BOUNDS.high, log=np.array([False, True]))
    scaler = Standardizer.from_bounds(bounds, InputKind.TABLE)
    ends = Examples(np.array([[0.0, 0.0], [10.0, 1000.0]], np.float32), np.zeros(2), ("a", "b"))
    assert np.allclose(scaler.transform(ends).features, [[-3, -3], [3, 3]], atol=1e-5)
    with pytest.raises(ValueError, match="0 <= low < high"):
        FeatureBounds(np.array([-1.0]), np.array([1.0]), log=np.array([True]))


def test_a_feature_without_public_bounds_is_left_unscaled() -> None:
    bounds = FeatureBounds(np.array([0.0, -np.inf]), np.array([10.0, np.inf]))
    data = _rows(5, 1)
    scaled = Standardizer.from_bounds(bounds, InputKind.TABLE).transform(data).features
    assert np.allclose(scaled[:, 1], data.features[:, 1])


@pytest.mark.parametrize(
    "dataset",
    [
        DatasetName.BREAST_CANCER,
        DatasetName.DIABETES,
        DatasetName.LUNG_SURVIVAL,
        DatasetName.SYNTHETIC_VITALS,
    ],
)
def test_built_in_public_bounds_cover_every_value_of_their_dataset(dataset: DatasetName) -> None:
    builtin = load_builtin(dataset)
    assert builtin.bounds is not None
    values = builtin.data.features
    if builtin.data.kind is InputKind.SEQUENCES:
        observed = values[..., -1] > 0.5
        values = values[..., :-1][observed]
    low, high = builtin.bounds.low.astype(np.float32), builtin.bounds.high.astype(np.float32)
    assert np.all(values >= low) and np.all(values <= high)  # as the float32 data holds them


def test_simulated_hospitals_scale_with_public_bounds_only() -> None:
    federation = build_federation(DataSettings(partition=PartitionName.IID))
    builtin = load_builtin(DatasetName.BREAST_CANCER)
    scaler = Standardizer.from_bounds(builtin.bounds, InputKind.TABLE)
    first = federation.hospitals[0].site.train
    # Scaling the same patient alone gives the same inputs: nothing came from the others.
    lone = Examples(first.features[:1], first.labels[:1], first.feature_names)
    assert federation.test is not None
    assert np.abs(first.features).max() <= 3.0 + 1e-5
    assert scaler.transform(lone).features.shape == (1, 30)


def test_the_fingerprint_names_the_rows_not_their_order_or_label() -> None:
    data = _rows(50, 2)
    fingerprint = dataset_fingerprint(data, source="contract-a")
    shuffled = data.subset(np.random.default_rng(0).permutation(50))
    assert dataset_fingerprint(shuffled, source="contract-a") == fingerprint
    assert dataset_fingerprint(data.subset(np.arange(49)), source="contract-a") != fingerprint
    assert dataset_fingerprint(data, source="contract-b") != fingerprint
    changed = data.features.copy()
    changed[7, 1] += 1.0
    assert dataset_fingerprint(data.with_features(changed), source="contract-a") != fingerprint


def test_the_split_follows_the_seed_and_fraction_it_is_given() -> None:
    data = _rows(100, 3)
    scaler = Standardizer.from_bounds(BOUNDS, InputKind.TABLE)

    def split(seed: int, fraction: float) -> np.ndarray:
        site = prepare_site(
            data, BINARY, scaler=scaler, eval_fraction=fraction, seed=seed, site="h"
        )
        return site.evaluation.features

    assert np.array_equal(split(1, 0.2), split(1, 0.2))
    assert not np.array_equal(split(1, 0.2), split(2, 0.2))
    assert len(split(1, 0.3)) == 30


CONTRACT = """
name = "c"
task = "binary"
label = "y"
classes = ["0", "1"]
positive_class = "1"

[features.size]
type = "float"
min = 0.0
max = 500.0
{scale}

[features.sex]
type = "category"
categories = ["F", "M"]
"""


def test_a_contract_gives_the_public_bounds_hospitals_scale_with() -> None:
    from fedcare.shared.contract import ContractError, DataContract

    linear = DataContract.parse(CONTRACT.format(scale=""), source="c")
    logged = DataContract.parse(CONTRACT.format(scale='scale = "log"'), source="c")
    bounds = logged.feature_bounds()
    assert bounds is not None and bounds.log is not None
    assert list(bounds.low) == [0.0, 0.0, 0.0] and list(bounds.high) == [500.0, 1.0, 1.0]
    assert list(bounds.log) == [True, False, False]
    assert linear.fingerprint() != logged.fingerprint()
    with pytest.raises(ContractError, match="log needs a min of 0 or more"):
        DataContract.parse(
            CONTRACT.format(scale='scale = "log"').replace("min = 0.0", "min = -1.0"), source="c"
        )
    with pytest.raises(ContractError, match="must be linear or log"):
        DataContract.parse(CONTRACT.format(scale='scale = "cubic"'), source="c")
