"""A contract's features: the ``[features.NAME]`` tables, and what a missing cell means.

A table contract's features may be numbers (``float``, ``int``, with an optional
``min`` and ``max``, and ``scale = "log"`` for a size or concentration whose range
spans orders of magnitude) or categories (one-hot encoded); a sequence contract's
are numbers only (:func:`shared.contract.sequences.parse_sequence_features`).
Hospitals scale every numeric feature with its range, never with their data's
statistics (:meth:`shared.contract.DataContract.feature_bounds`). What a
feature's empty cells mean is :mod:`shared.contract.missing`'s part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from fedcare.shared.contract.fields import FieldReader
from fedcare.shared.contract.missing import (
    Fill,
    MissingFields,
    MissingPolicy,
    indicator_name,
    parse_missing,
)


class FeatureType(StrEnum):
    """Types a contract feature can take."""

    FLOAT = "float"
    INT = "int"
    CATEGORY = "category"


@dataclass(frozen=True)
class Feature:
    """One feature column.

    Attributes
    ----------
    name : str
        Column name in the file.
    type : FeatureType
        Numeric (float, int) or categorical.
    minimum, maximum : float | None
        Inclusive allowed range of a numeric feature; hospitals scale the
        feature with it (never with their data's statistics).
    categories : tuple[str, ...]
        Allowed values of a categorical feature, in one-hot order.
    missing : MissingPolicy
        What an empty cell means (the contract's policy unless the feature sets its own).
    fill : Fill | None
        What an empty cell becomes where ``missing`` fills it (numbers only).
    indicator : bool
        Whether the model also gets an input that is 1 where the cell was empty (tables).
    log_scale : bool
        ``scale = "log"``: scaled on a log scale within its range (a size or
        concentration whose range spans orders of magnitude; needs ``min >= 0``).
    """

    name: str
    type: FeatureType
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    missing: MissingPolicy = MissingPolicy.REJECT
    fill: Fill | None = None
    indicator: bool = False
    log_scale: bool = False

    def encoded_names(self) -> list[str]:
        """Return the model input columns this feature becomes in a table.

        One per category if one-hot, and ``NAME_missing`` last when it has an indicator.
        """
        if self.type is FeatureType.CATEGORY:
            names = [f"{self.name}={category}" for category in self.categories]
        else:
            names = [self.name]
        return [*names, indicator_name(self.name)] if self.indicator else names


TABLE_FEATURE_KEYS = frozenset(
    {"type", "min", "max", "scale", "categories", "missing", "fill", "indicator"}
)
"""The keys of a table contract's ``[features.NAME]`` tables."""
_SCALES = ("linear", "log")


def feature_tables(fields: FieldReader) -> dict[str, Any]:
    """Return the ``[features.NAME]`` tables by name, refusing a contract that lists none."""
    tables: dict[str, Any] = fields.get("features", dict)
    if not tables:
        raise fields.fail("features", "lists no feature")
    return tables


def parse_table_features(
    fields: FieldReader, label: str, id_columns: tuple[str, ...], missing: MissingPolicy
) -> tuple[Feature, ...]:
    """Parse a table contract's ``[features]``: none may be the label or an id column.

    ``missing`` is the contract's policy, which each feature may override.

    Raises
    ------
    ContractError
        Naming the first feature field at fault.
    """
    tables = feature_tables(fields)
    features = tuple(
        parse_feature(fields, name, table, keys=TABLE_FEATURE_KEYS, missing=missing)
        for name, table in tables.items()
    )
    for feature in features:
        if feature.name == label:
            raise fields.fail(
                f"features.{feature.name}", "is the label; a label cannot also be a feature"
            )
        if feature.name in id_columns:
            raise fields.fail(
                f"features.{feature.name}", "is an id column; identifiers are never features"
            )
    return features


def parse_feature(
    fields: FieldReader,
    name: str,
    table: Any,
    *,
    keys: frozenset[str],
    missing: MissingPolicy,
) -> Feature:
    """Parse the ``[features.NAME]`` table ``table`` of column ``name``.

    ``keys`` are the keys the contract's format allows; ``missing`` is the
    contract's missing-value policy (:func:`shared.contract.missing.parse_missing`).

    Raises
    ------
    ContractError
        If a key is unknown, the type missing or unknown, a bound not a finite
        number, ``min`` above ``max``, a category list malformed, or the
        missing-value fields inconsistent.
    """
    field = f"features.{name}"
    if not isinstance(table, dict):
        raise fields.fail(field, "must be a table with at least a type")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise fields.fail(
            f"{field}.{unknown[0]}",
            f"is not a feature field here; use {', '.join(sorted(keys))}",
        )
    if "type" not in table:
        raise fields.fail(f"{field}.type", "is required (float, int or category)")
    if table["type"] not in [t.value for t in FeatureType]:
        raise fields.fail(f"{field}.type", "must be float, int or category")
    kind = FeatureType(table["type"])
    if kind is FeatureType.CATEGORY:
        categorical = _categorical(fields, name, table)
        return _with_missing(categorical, parse_missing(fields, categorical, table, missing))
    minimum, maximum = (_bound(fields, f"{field}.{key}", table.get(key)) for key in ("min", "max"))
    if minimum is not None and maximum is not None and minimum > maximum:
        raise fields.fail(field, "has min greater than max")
    log_scale = _log_scale(fields, field, table.get("scale", "linear"), minimum, maximum)
    feature = Feature(name=name, type=kind, minimum=minimum, maximum=maximum, log_scale=log_scale)
    return _with_missing(feature, parse_missing(fields, feature, table, missing))


def _with_missing(feature: Feature, fields: MissingFields) -> Feature:
    return replace(feature, missing=fields.missing, fill=fields.fill, indicator=fields.indicator)


def _log_scale(
    fields: FieldReader, field: str, scale: Any, minimum: float | None, maximum: float | None
) -> bool:
    if scale not in _SCALES:
        raise fields.fail(f"{field}.scale", "must be linear or log")
    if scale == "log" and not (
        minimum is not None and maximum is not None and 0 <= minimum < maximum
    ):
        raise fields.fail(f"{field}.scale", "log needs a min of 0 or more and a larger max")
    return bool(scale == "log")


def _categorical(fields: FieldReader, name: str, table: dict[str, Any]) -> Feature:
    field = f"features.{name}.categories"
    categories = table.get("categories")
    if not isinstance(categories, list) or not categories:
        raise fields.fail(field, "must list the allowed categories")
    if not all(isinstance(c, str) and c for c in categories):
        raise fields.fail(field, "must be non-empty strings")
    if len(set(categories)) != len(categories):
        raise fields.fail(field, "lists a category twice")
    if "min" in table or "max" in table or "scale" in table:
        raise fields.fail(f"features.{name}", "a category has no min, max or scale")
    return Feature(name=name, type=FeatureType.CATEGORY, categories=tuple(categories))


def _bound(fields: FieldReader, field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fields.fail(field, "must be a finite number")
    return float(value)
