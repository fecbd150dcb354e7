"""Robust aggregation by name: oracles, an attacker, minimum counts and dtypes."""

import numpy as np
import pytest

from fedcare.server.robust_aggregation import (
    AggregationError,
    RobustMethod,
    aggregate_updates,
    minimum_updates,
)
from fedcare.shared.errors import FedcareError


def _f32(*values: object) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _honest(rng: np.random.Generator, count: int) -> list[tuple[list[np.ndarray], int]]:
    return [
        (
            [
                rng.normal(0.1, 0.05, size=(3, 4)).astype(np.float32),
                rng.normal(-0.1, 0.05, size=(4,)).astype(np.float32),
            ],
            int(rng.integers(50, 150)),
        )
        for _ in range(count)
    ]


def _attacker(rng: np.random.Generator, norm: float) -> tuple[list[np.ndarray], int]:
    direction = rng.normal(size=16)
    flat = direction / np.linalg.norm(direction) * norm
    return [flat[:12].reshape(3, 4).astype(np.float32), flat[12:].astype(np.float32)], 100


def test_fedavg_is_the_row_weighted_mean() -> None:
    updates = [([_f32(1.0, 2.0), _f32(8.0)], 1), ([_f32(3.0, 4.0), _f32(0.0)], 3)]
    mean = aggregate_updates(RobustMethod.FEDAVG, updates)
    np.testing.assert_allclose(mean[0], [2.5, 3.5])
    np.testing.assert_allclose(mean[1], [2.0])


def test_median_of_three_known_updates() -> None:
    updates = [
        ([_f32([1.0, 5.0], [-2.0, 0.0]), _f32(10.0)], 1),
        ([_f32([3.0, 4.0], [0.0, 7.0]), _f32(-1.0)], 500),
        ([_f32([2.0, 9.0], [-5.0, 1.0]), _f32(4.0)], 9),
    ]
    median = aggregate_updates(RobustMethod.MEDIAN, updates)
    np.testing.assert_array_equal(median[0], [[2.0, 5.0], [-2.0, 1.0]])
    np.testing.assert_array_equal(median[1], [4.0])


def test_trimmed_mean_of_five_drops_a_huge_outlier() -> None:
    updates = [
        ([_f32(1.0, -1.0), _f32(10.0)], 10),
        ([_f32(2.0, 0.0), _f32(20.0)], 10),
        ([_f32(1e6, -1e6), _f32(50.0)], 10),
        ([_f32(3.0, 1.0), _f32(30.0)], 10),
        ([_f32(4.0, 2.0), _f32(40.0)], 10),
    ]
    # Per coordinate, 0.2 of 5 cuts the lowest and highest value and averages the rest.
    trimmed = aggregate_updates(RobustMethod.TRIMMED_MEAN, updates, trim_fraction=0.2)
    np.testing.assert_allclose(trimmed[0], [(2 + 3 + 4) / 3, (-1 + 0 + 1) / 3])
    np.testing.assert_allclose(trimmed[1], [(20 + 30 + 40) / 3])


def test_krum_picks_the_honest_update_closest_to_its_neighbours() -> None:
    honest = [_f32(1.0, 1.0), _f32(1.1, 1.0), _f32(0.9, 1.0), _f32(1.0, 1.3)]
    updates = [([vector], 10) for vector in [honest[1], _f32(100.0, -100.0), *honest[::2]]]
    updates.append(([honest[3]], 10))
    # n=5, f=1: each score sums the n-f-2 = 2 smallest squared distances; update
    # (1.0, 1.0) scores 0.01 + 0.01, the others at least 0.01 + 0.04.
    chosen = aggregate_updates(RobustMethod.KRUM, updates, krum_byzantine=1)
    np.testing.assert_array_equal(chosen[0], honest[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_median_and_trimmed_mean_match_numpy_oracles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    updates = _honest(rng, 8)
    stacked = [np.stack([arrays[i] for arrays, _ in updates]) for i in range(2)]
    median = aggregate_updates(RobustMethod.MEDIAN, updates)
    trimmed = aggregate_updates(RobustMethod.TRIMMED_MEAN, updates, trim_fraction=0.25)
    for layer, got_median, got_trimmed in zip(stacked, median, trimmed, strict=True):
        np.testing.assert_allclose(got_median, np.median(layer, axis=0), rtol=1e-6)
        kept = np.sort(layer, axis=0)[2:6]  # int(0.25 * 8) = 2 cut from each end
        np.testing.assert_allclose(got_trimmed, kept.mean(axis=0), rtol=1e-6)


def test_one_attacker_moves_fedavg_but_not_the_robust_rules() -> None:
    rng = np.random.default_rng(7)
    honest = _honest(rng, 4)
    attacked = [*honest[:2], _attacker(rng, 1e6), *honest[2:]]
    assert np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in attacked[2][0])) == (
        pytest.approx(1e6, rel=1e-6)
    )
    low = [np.min([arrays[i] for arrays, _ in honest], axis=0) for i in range(2)]
    high = [np.max([arrays[i] for arrays, _ in honest], axis=0) for i in range(2)]
    clean_mean = aggregate_updates(RobustMethod.FEDAVG, honest)

    moved = aggregate_updates(RobustMethod.FEDAVG, attacked)
    shift = np.sqrt(sum(np.sum((m - c) ** 2) for m, c in zip(moved, clean_mean, strict=True)))
    assert shift > 1e5

    for method in (RobustMethod.MEDIAN, RobustMethod.TRIMMED_MEAN, RobustMethod.KRUM):
        robust = aggregate_updates(method, attacked)
        for layer, lowest, highest in zip(robust, low, high, strict=True):
            assert np.all((layer >= lowest) & (layer <= highest)), method
    krum = aggregate_updates(RobustMethod.KRUM, attacked)
    assert any(
        all(np.array_equal(k, h) for k, h in zip(krum, arrays, strict=True)) for arrays, _ in honest
    )


@pytest.mark.parametrize(
    ("method", "settings", "expected"),
    [
        (RobustMethod.FEDAVG, {}, 1),
        (RobustMethod.MEDIAN, {}, 1),
        (RobustMethod.TRIMMED_MEAN, {}, 5),
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": 0.1}, 10),
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": 0.25}, 4),
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": 1 / 3}, 3),
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": 0.49}, 3),
        (RobustMethod.KRUM, {}, 5),
        (RobustMethod.KRUM, {"krum_byzantine": 0}, 3),
        (RobustMethod.KRUM, {"krum_byzantine": 2}, 7),
    ],
)
def test_minimum_updates(method: RobustMethod, settings: dict[str, float], expected: int) -> None:
    assert minimum_updates(method, **settings) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("trim_fraction", [0.05, 0.1, 0.15, 0.2, 0.3, 0.35, 0.4, 0.45])
def test_trimmed_mean_at_its_minimum_cuts_one_from_each_end(trim_fraction: float) -> None:
    needed = minimum_updates(RobustMethod.TRIMMED_MEAN, trim_fraction=trim_fraction)
    # The highest value is huge, so the result stays small only if it was cut.
    updates = [([_f32(float(i))], 1) for i in range(needed - 1)] + [([_f32(1e9)], 1)]
    result = aggregate_updates(RobustMethod.TRIMMED_MEAN, updates, trim_fraction=trim_fraction)
    assert result[0][0] < needed
    with pytest.raises(AggregationError, match="raise trim_fraction"):
        aggregate_updates(RobustMethod.TRIMMED_MEAN, updates[1:], trim_fraction=trim_fraction)


def test_too_few_for_krum_says_which_setting_to_change() -> None:
    updates = [([_f32(float(i))], 1) for i in range(4)]
    with pytest.raises(AggregationError, match="lower krum_byzantine to 0"):
        aggregate_updates(RobustMethod.KRUM, updates, krum_byzantine=1)
    assert aggregate_updates(RobustMethod.KRUM, updates, krum_byzantine=0)[0].shape == (1,)
    with pytest.raises(AggregationError, match="at least 3 updates"):
        aggregate_updates(RobustMethod.KRUM, updates[:2], krum_byzantine=0)


@pytest.mark.parametrize("method", list(RobustMethod))
def test_no_updates_is_an_error(method: RobustMethod) -> None:
    with pytest.raises(AggregationError, match="no updates"):
        aggregate_updates(method, [])


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": 0.0}),
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": 0.5}),
        (RobustMethod.TRIMMED_MEAN, {"trim_fraction": -0.1}),
        (RobustMethod.KRUM, {"krum_byzantine": -1}),
        (RobustMethod.KRUM, {"krum_byzantine": 1.5}),
    ],
)
def test_out_of_range_settings_are_refused(
    method: RobustMethod, settings: dict[str, float]
) -> None:
    updates = [([_f32(float(i))], 1) for i in range(9)]
    with pytest.raises(AggregationError) as error:
        aggregate_updates(method, updates, **settings)  # type: ignore[arg-type]
    assert isinstance(error.value, FedcareError)
    assert next(iter(settings)) in str(error.value)


def test_methods_are_chosen_by_name() -> None:
    updates = [([_f32(float(i))], 1) for i in range(5)]
    assert aggregate_updates("median", updates)[0][0] == 2.0  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="'fedavg', 'median', 'trimmed-mean', 'krum'"):
        aggregate_updates("mean", updates)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", list(RobustMethod))
def test_outputs_keep_input_dtypes_and_do_not_alias(method: RobustMethod) -> None:
    rng = np.random.default_rng(3)
    updates = [
        (
            [
                rng.normal(size=(2, 3)).astype(np.float32),
                rng.normal(size=(3,)).astype(np.float64),
                rng.integers(0, 9, size=(2,)).astype(np.int64),
            ],
            10 + i,
        )
        for i in range(5)
    ]
    before = [[a.copy() for a in arrays] for arrays, _ in updates]
    result = aggregate_updates(method, updates)
    assert [a.dtype for a in result] == [np.float32, np.float64, np.int64]
    assert [a.shape for a in result] == [(2, 3), (3,), (2,)]
    for arrays, original in zip((a for a, _ in updates), before, strict=True):
        assert all(np.array_equal(a, o) for a, o in zip(arrays, original, strict=True))
        assert not any(np.shares_memory(r, a) for r, a in zip(result, arrays, strict=True))


def test_mismatched_layouts_are_refused() -> None:
    updates = [([_f32(1.0, 2.0)], 1), ([_f32(1.0, 2.0, 3.0)], 1), ([_f32(0.0, 0.0)], 1)]
    with pytest.raises(AggregationError, match="update 1 differs from update 0"):
        aggregate_updates(RobustMethod.MEDIAN, updates)


def test_fedavg_refuses_updates_without_rows() -> None:
    with pytest.raises(AggregationError, match="screen replies"):
        aggregate_updates(RobustMethod.FEDAVG, [([_f32(1.0)], 0), ([_f32(2.0)], 0)])
