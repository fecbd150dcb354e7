"""Checks on every hospital update before the ``robust`` mode aggregates it.

In the ``robust`` aggregation mode updates arrive in plaintext (over TLS, without
SecAgg+), so the aggregator can look at each one and drop those that are broken or
hostile: the wrong layout, non-finite values, an outsized norm, or an implausible
sample count (which FedAvg uses as the update's weight).

Notes
-----
Problem descriptions go into logs and run records, so they name counts, shapes,
dtypes and norms but never a weight value. Norms are printed to three significant
digits only: the norm of an update with a single non-zero entry *is* that entry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedcare.shared.errors import FedcareError
from fedcare.shared.serialization import ModelLayout

logger = logging.getLogger(__name__)

Reply = tuple[str, list[np.ndarray], int]
"""One hospital's reply: its name, its update arrays, its number of training rows."""

_WIRE_DTYPE = np.dtype(np.float32).name
"""``shared.serialization.get_weights`` sends every array as float32, whatever the model."""

_NUMERIC_KINDS = frozenset("biufc")
"""``numpy.dtype.kind`` codes whose arrays have values a norm can be taken of."""


class UpdateBoundsError(FedcareError, ValueError):
    """The bounds updates are checked against are themselves inconsistent."""


@dataclass(frozen=True)
class UpdateBounds:
    """What a plausible update looks like.

    Parameters
    ----------
    shapes : tuple[tuple[int, ...], ...]
        The shape of every array, in the model's order.
    dtypes : tuple[str, ...]
        The numpy dtype name of every array (e.g. ``"float32"``).
    max_norm : float
        Largest L2 norm of the whole update, all arrays taken together.
    max_examples : int
        Largest plausible number of training rows behind one update.

    Raises
    ------
    UpdateBoundsError
        If ``shapes`` and ``dtypes`` differ in length, a dtype name is unknown to
        numpy, ``max_norm`` is not positive or ``max_examples`` is below 1.
    """

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    max_norm: float
    max_examples: int

    def __post_init__(self) -> None:
        if len(self.shapes) != len(self.dtypes):
            raise UpdateBoundsError(
                f"update bounds list {len(self.shapes)} shapes but {len(self.dtypes)} dtypes; "
                "give one dtype per array"
            )
        for name in self.dtypes:
            _known_dtype(name)
        if not self.max_norm > 0:  # also refuses NaN
            raise UpdateBoundsError(
                f"max_norm is {self.max_norm}; give a positive bound on the update's L2 norm"
            )
        if isinstance(self.max_examples, bool) or not isinstance(self.max_examples, int):
            raise UpdateBoundsError("max_examples must be a whole number of training rows")
        if self.max_examples < 1:
            raise UpdateBoundsError(
                f"max_examples is {self.max_examples}; it must be at least 1 training row"
            )

    @classmethod
    def from_layout(
        cls, layout: ModelLayout, *, max_norm: float, max_examples: int
    ) -> UpdateBounds:
        """Bounds for updates to a model of ``layout``.

        Parameters
        ----------
        layout : ModelLayout
            The model's parameter names and shapes.
        max_norm : float
            Largest L2 norm of the whole update.
        max_examples : int
            Largest plausible number of training rows behind one update.

        Returns
        -------
        UpdateBounds
            The layout's shapes, each array expected as float32 (the dtype
            ``shared.serialization.get_weights`` sends every array in).
        """
        return cls(
            shapes=layout.shapes,
            dtypes=(_WIRE_DTYPE,) * len(layout.shapes),
            max_norm=max_norm,
            max_examples=max_examples,
        )


@dataclass(frozen=True)
class Rejection:
    """A hospital whose update was refused, and why.

    Parameters
    ----------
    hospital : str
        The hospital's name.
    reasons : tuple[str, ...]
        Every problem found with its update; none holds a weight value.
    """

    hospital: str
    reasons: tuple[str, ...]

    def describe(self) -> str:
        """One line for logs and run records."""
        return f"{self.hospital}: update rejected ({'; '.join(self.reasons)})"


def update_norm(arrays: Sequence[np.ndarray]) -> float:
    """Compute the L2 norm of all ``arrays`` taken together, as one flat vector.

    Parameters
    ----------
    arrays : Sequence[np.ndarray]
        Numeric arrays of any shapes.

    Returns
    -------
    float
        The norm, computed in float64 with scaling so that large finite values do
        not overflow; ``inf`` if any entry is NaN or infinite; 0.0 for no entries.
    """
    # math.hypot scales internally, so combining per-array norms cannot overflow either.
    return math.hypot(*(_array_norm(array) for array in arrays))


def update_problems(
    arrays: Sequence[np.ndarray], num_examples: int, bounds: UpdateBounds
) -> list[str]:
    """List every problem with one update, in short sentences holding no weight values.

    Parameters
    ----------
    arrays : Sequence[np.ndarray]
        The update (a model delta), one array per model parameter.
    num_examples : int
        The number of training rows the hospital reports for it.
    bounds : UpdateBounds
        What a plausible update looks like.

    Returns
    -------
    list[str]
        The problems found; empty if the update is valid.
    """
    return (
        _layout_problems(arrays, bounds)
        + _value_problems(arrays, bounds)
        + _count_problems(num_examples, bounds)
    )


def screen_replies(
    replies: Sequence[Reply], bounds: UpdateBounds
) -> tuple[list[Reply], list[Rejection]]:
    """Split replies into those fit to aggregate and those rejected; log each rejection.

    Parameters
    ----------
    replies : Sequence[Reply]
        ``(hospital, arrays, num_examples)`` for each hospital that replied.
    bounds : UpdateBounds
        What a plausible update looks like.

    Returns
    -------
    tuple[list[Reply], list[Rejection]]
        The accepted replies and the rejections, each in the order of ``replies``.
    """
    accepted: list[Reply] = []
    rejected: list[Rejection] = []
    for hospital, arrays, num_examples in replies:
        problems = update_problems(arrays, num_examples, bounds)
        if problems:
            rejection = Rejection(hospital, tuple(problems))
            logger.warning("%s", rejection.describe())
            rejected.append(rejection)
        else:
            accepted.append((hospital, arrays, num_examples))
    return accepted, rejected


def _known_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError as error:
        raise UpdateBoundsError(
            f"'{name}' is not a numpy dtype name; use one such as 'float32'"
        ) from error


def _array_norm(array: np.ndarray) -> float:
    values = np.asarray(array)
    if values.size == 0:
        return 0.0
    wide = np.complex128 if np.iscomplexobj(values) else np.float64
    magnitudes = np.abs(values.astype(wide))
    largest = float(np.max(magnitudes))
    if not math.isfinite(largest):  # NaN or infinity anywhere
        return math.inf
    if largest == 0.0:
        return 0.0
    # Dividing by the largest entry keeps every square at most 1, so the sum cannot overflow.
    return largest * math.sqrt(float(np.sum(np.square(magnitudes / largest))))


def _layout_problems(arrays: Sequence[np.ndarray], bounds: UpdateBounds) -> list[str]:
    expected = len(bounds.shapes)
    if len(arrays) != expected:
        # With an array missing or extra, every later index is misaligned: one count
        # problem says more than a cascade of shape mismatches.
        return [f"update has {len(arrays)} arrays, expected {expected}"]
    problems: list[str] = []
    for index, (array, shape, dtype) in enumerate(
        zip(arrays, bounds.shapes, bounds.dtypes, strict=True)
    ):
        actual = np.asarray(array)
        if actual.shape != tuple(shape):
            problems.append(f"array {index} has shape {actual.shape}, expected {tuple(shape)}")
        if actual.dtype != np.dtype(dtype):
            problems.append(
                f"array {index} has dtype {actual.dtype.name}, expected {np.dtype(dtype).name}"
            )
    return problems


def _value_problems(arrays: Sequence[np.ndarray], bounds: UpdateBounds) -> list[str]:
    # Non-numeric arrays have no values to check; their dtype problem is reported already.
    numeric = [
        (index, values)
        for index, values in enumerate(np.asarray(array) for array in arrays)
        if values.dtype.kind in _NUMERIC_KINDS
    ]
    problems = []
    for index, values in numeric:
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            problems.append(f"array {index} holds {bad} non-finite entries (NaN or infinity)")
    if problems:
        return problems  # the norm would only be infinite, which says nothing new
    norm = update_norm([values for _, values in numeric])
    if norm > bounds.max_norm:
        problems.append(f"update norm {norm:.3g} exceeds the bound {bounds.max_norm:.3g}")
    return problems


def _count_problems(num_examples: int, bounds: UpdateBounds) -> list[str]:
    # FedAvg weighs each update by its sample count, so an inflated count lets one
    # hospital outweigh all the others.
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        return [f"num_examples is a {type(num_examples).__name__}, expected a whole number"]
    if num_examples <= 0:
        return [f"num_examples is {num_examples}; an update needs at least 1 training row"]
    if num_examples > bounds.max_examples:
        return [f"num_examples {num_examples} exceeds the plausible maximum {bounds.max_examples}"]
    return []
