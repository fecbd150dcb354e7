"""Subgroups of patients to validate the model in: by a category, or by bands of a number.

A subgroup is named after a contract feature: ``sex`` groups a category
feature by its categories; ``age=40,65`` groups a number feature into bands
(below 40, 40 to below 65, 65 and above). For a stay, a feature's value at the
stay's last real time step decides. Groups with fewer patients than the
minimum count are suppressed: no metric and no count is shown for them, so a
small group's patients are not singled out even in a local report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcare.shared.contract import DataContract, FeatureType
from fedcare.shared.data import InputKind
from fedcare.shared.errors import FedcareError
from fedcare.shared.sequences import MASK_CHANNEL


@dataclass(frozen=True)
class Subgrouping:
    """A feature's groups: a name and a row mask for each.

    Attributes
    ----------
    feature : str
        The contract feature grouped on.
    groups : dict[str, np.ndarray]
        Group label (``"F"``, ``"40 to <65"``) to a bool mask over the rows.
    """

    feature: str
    groups: dict[str, np.ndarray]


def parse_subgroup(text: str) -> tuple[str, tuple[float, ...]]:
    """Split ``"age=40,65"`` into ``("age", (40.0, 65.0))``; ``"sex"`` into ``("sex", ())``.

    Raises
    ------
    FedcareError
        If the cut points are not increasing numbers.
    """
    name, _, cuts = text.partition("=")
    if not cuts:
        return name.strip(), ()
    try:
        points = tuple(float(point) for point in cuts.split(","))
    except ValueError:
        raise FedcareError(
            f"--subgroup {text}: give a feature, optionally with increasing cut points, "
            "e.g. --subgroup sex or --subgroup age=40,65"
        ) from None
    if list(points) != sorted(set(points)):
        raise FedcareError(f"--subgroup {text}: cut points must increase")
    return name.strip(), points


def subgrouping(contract: DataContract, features: np.ndarray, text: str) -> Subgrouping:
    """Group raw (unstandardised) ``features`` by the feature ``text`` names.

    Raises
    ------
    FedcareError
        If the contract has no such feature, the data are images, or a number
        feature is given without cut points.
    """
    name, cuts = parse_subgroup(text)
    kind = contract.input_kind()
    if kind is InputKind.IMAGES:
        raise FedcareError(
            "--subgroup needs feature columns; an image contract has none, so images cannot be "
            "grouped"
        )
    spec = next((feature for feature in contract.features if feature.name == name), None)
    if spec is None:
        known = ", ".join(feature.name for feature in contract.features)
        raise FedcareError(f"--subgroup {name}: not a feature of the contract ({known})")
    values = _values(contract, features, kind)
    if spec.type is FeatureType.CATEGORY:
        columns = contract.feature_names()
        return Subgrouping(
            name,
            {
                category: values[:, columns.index(f"{name}={category}")] > 0.5
                for category in spec.categories
            },
        )
    if not cuts:
        raise FedcareError(
            f"--subgroup {name}: a number feature needs cut points, e.g. --subgroup {name}=40,65"
        )
    column = values[:, contract.feature_names().index(name)]
    return Subgrouping(name, _bands(column, cuts))


def _values(contract: DataContract, features: np.ndarray, kind: InputKind) -> np.ndarray:
    if kind is not InputKind.SEQUENCES:
        return features
    # Stays are left-padded: the last time step is always a real one.
    return np.asarray(features[:, -1, :MASK_CHANNEL])


def _bands(column: np.ndarray, cuts: tuple[float, ...]) -> dict[str, np.ndarray]:
    edges = [-np.inf, *cuts, np.inf]
    bands = {}
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        if np.isneginf(low):
            label = f"<{_number(high)}"
        elif np.isposinf(high):
            label = f">={_number(low)}"
        else:
            label = f"{_number(low)} to <{_number(high)}"
        bands[label] = (column >= low) & (column < high)
    return bands


def _number(value: float) -> str:
    return f"{value:g}"
