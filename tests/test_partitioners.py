"""Partitioners: every row used once, seeded, and skewed as promised."""

import numpy as np
import pytest

from fedcare.shared.errors import DataError
from fedcare.simulations.partitioners import (
    partition_dirichlet,
    partition_iid,
    partition_natural,
    partition_quantity,
)

LABELS = np.array([0] * 300 + [1] * 200)


def _assert_exact_cover(parts: list[np.ndarray], n_rows: int) -> None:
    combined = np.concatenate(parts)
    assert len(combined) == n_rows
    assert np.array_equal(np.sort(combined), np.arange(n_rows))


def test_iid_deals_near_equal_shares() -> None:
    parts = partition_iid(500, 3, np.random.default_rng(0))
    _assert_exact_cover(parts, 500)
    assert sorted(len(p) for p in parts) == [166, 167, 167]


@pytest.mark.parametrize("alpha", [0.3, 1.0, 100.0])
def test_dirichlet_covers_every_row_with_minimum_size(alpha: float) -> None:
    parts = partition_dirichlet(LABELS, 4, alpha, np.random.default_rng(1), min_size=20)
    _assert_exact_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_same_seed_same_split_other_seed_other_split() -> None:
    first = partition_dirichlet(LABELS, 3, 1.0, np.random.default_rng(7), min_size=10)
    again = partition_dirichlet(LABELS, 3, 1.0, np.random.default_rng(7), min_size=10)
    other = partition_dirichlet(LABELS, 3, 1.0, np.random.default_rng(8), min_size=10)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def _label_share_spread(alpha: float) -> float:
    spreads = []
    for seed in range(20):
        parts = partition_dirichlet(LABELS, 3, alpha, np.random.default_rng(seed), min_size=10)
        shares = [LABELS[p].mean() for p in parts]
        spreads.append(max(shares) - min(shares))
    return float(np.mean(spreads))


def test_smaller_alpha_skews_labels_more() -> None:
    assert _label_share_spread(0.3) > _label_share_spread(100.0) + 0.2
    assert _label_share_spread(100.0) < 0.1


def test_quantity_skew_varies_sizes_not_labels() -> None:
    parts = partition_quantity(len(LABELS), 4, 0.5, np.random.default_rng(3), min_size=20)
    _assert_exact_cover(parts, len(LABELS))
    sizes = [len(p) for p in parts]
    assert max(sizes) > 2 * min(sizes)
    for part in parts:
        assert abs(LABELS[part].mean() - LABELS.mean()) < 0.2


def test_impossible_minimum_size_fails_with_a_clear_remedy() -> None:
    with pytest.raises(DataError, match="raise dirichlet-alpha or use fewer hospitals"):
        partition_dirichlet(LABELS, 30, 0.1, np.random.default_rng(0), min_size=20)


def test_natural_split_one_hospital_per_site() -> None:
    sites = np.array(["b", "a", "b", "c", "a", "a"])
    parts = partition_natural(sites, 3)
    _assert_exact_cover(parts, len(sites))
    assert [sites[p][0] for p in parts] == ["a", "b", "c"]
    with pytest.raises(DataError, match="set hospitals to 3"):
        partition_natural(sites, 4)


def test_natural_split_groups_whole_sites_when_there_are_more_sites_than_hospitals() -> None:
    sites = np.repeat(np.arange(7), [9, 1, 5, 4, 3, 2, 6])
    parts = partition_natural(sites, 3)
    _assert_exact_cover(parts, len(sites))
    for part in parts:
        # No site is split between hospitals.
        assert all(
            np.all(np.isin(np.flatnonzero(sites == s), part)) for s in np.unique(sites[part])
        )
    assert sorted(len(p) for p in parts) == [9, 10, 11]
