"""Split row indices among virtual hospitals: IID, label skew, size skew, natural sites.

Every partitioner is a pure function of its inputs and a ``numpy`` Generator,
returns one sorted index array per hospital, and uses every row exactly once.
Skewed partitioners redraw until each hospital holds at least ``min_size`` rows
and fail with a clear message if no draw does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedcare.shared.errors import DataError

MAX_DRAWS = 200


def partition_iid(n_rows: int, num_partitions: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal rows into ``num_partitions`` near-equal shares."""
    return [np.sort(part) for part in np.array_split(rng.permutation(n_rows), num_partitions)]


def partition_dirichlet(
    labels: np.ndarray,
    num_partitions: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int,
) -> list[np.ndarray]:
    """Label skew: each class is shared out by its own Dirichlet(``alpha``) draw.

    Hospital sizes differ as a consequence; smaller ``alpha`` is more skewed.
    """

    def draw() -> list[np.ndarray]:
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            cuts = _cut_points(rng.dirichlet([alpha] * num_partitions), len(rows))
            for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
                part.extend(chunk.tolist())
        return [np.sort(np.asarray(part, dtype=int)) for part in parts]

    return _redraw_until_sized(draw, min_size, f"dirichlet-alpha={alpha}")


def partition_quantity(
    n_rows: int,
    num_partitions: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int,
) -> list[np.ndarray]:
    """Size skew: hospital shares come from Dirichlet(``alpha``); labels stay IID."""

    def draw() -> list[np.ndarray]:
        rows = rng.permutation(n_rows)
        cuts = _cut_points(rng.dirichlet([alpha] * num_partitions), n_rows)
        return [np.sort(chunk) for chunk in np.split(rows, cuts)]

    return _redraw_until_sized(draw, min_size, f"dirichlet-alpha={alpha}")


def partition_natural(sites: np.ndarray, num_partitions: int) -> list[np.ndarray]:
    """Keep every site whole: one hospital per site, or whole sites grouped into hospitals.

    With more sites than hospitals, sites go largest first to the hospital holding
    the fewest rows so far (a multi-site hospital group, as in a regional network).

    Raises
    ------
    DataError
        If there are fewer distinct sites than ``num_partitions``.
    """
    site_values, counts = np.unique(sites, return_counts=True)
    if len(site_values) < num_partitions:
        raise DataError(
            f"the natural split has {len(site_values)} sites but {num_partitions} hospitals "
            f"were asked for; set hospitals to {len(site_values)} or fewer"
        )
    members: list[list[int]] = [[] for _ in range(num_partitions)]
    sizes = np.zeros(num_partitions, dtype=int)
    for site in np.argsort(-counts, kind="stable"):
        smallest = int(np.argmin(sizes))
        members[smallest].append(int(site))
        sizes[smallest] += counts[site]
    return [np.flatnonzero(np.isin(sites, site_values[group])) for group in members]


def _cut_points(proportions: np.ndarray, n_rows: int) -> np.ndarray:
    return (np.cumsum(proportions)[:-1] * n_rows).astype(int)


def _redraw_until_sized(
    draw: Callable[[], list[np.ndarray]], min_size: int, setting: str
) -> list[np.ndarray]:
    for _ in range(MAX_DRAWS):
        parts = draw()
        if min(len(part) for part in parts) >= min_size:
            return parts
    raise DataError(
        f"no split with {setting} gave every hospital at least {min_size} rows in "
        f"{MAX_DRAWS} draws; raise dirichlet-alpha or use fewer hospitals"
    )
