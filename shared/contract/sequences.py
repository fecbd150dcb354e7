"""Sequence contracts: the ``[sequences]`` table, and the spec a sequence file is held to.

A sequence file has one row per patient per time step. The contract names the
patient id and time step columns and how many steps are kept
(:class:`SequenceLayout`); together with the label, the features, the classes
and the minimum counts that makes the :class:`SequenceSpec` the hospital's
sequence reader (:mod:`client.readers.sequences`) checks its file against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedcare.shared.contract.features import (
    Feature,
    FeatureType,
    feature_tables,
    parse_feature,
)
from fedcare.shared.contract.fields import FieldReader
from fedcare.shared.contract.missing import (
    SEQUENCE_POLICIES,
    MissingPolicy,
    observed_name,
    since_name,
)
from fedcare.shared.errors import DataError

MASK_NAME = "observed"
"""Feature name of the mask channel added to every sequence (1 real step, 0 padding)."""

_SEQUENCE_KEYS = {"id_column", "time_column", "max_length", "min_length"}

SEQUENCE_FEATURE_KEYS = frozenset({"type", "min", "max", "scale", "fill"})
"""The keys of a sequence contract's ``[features.NAME]`` tables (``fill`` with forward-fill)."""


class SequenceSpecError(DataError):
    """A :class:`SequenceSpec` is inconsistent; the message names the field and the fix."""


@dataclass(frozen=True)
class SequenceLayout:
    """The ``[sequences]`` table: how a long-format file's rows become sequences.

    Attributes
    ----------
    id_column : str
        Column identifying the patient (grouping only, never a feature).
    time_column : str
        Column of whole, non-negative time step numbers, unique within a patient.
    max_length : int
        Steps kept per patient (the most recent); shorter sequences are left-padded.
    min_length : int
        Fewest steps a patient may have.
    """

    id_column: str
    time_column: str
    max_length: int
    min_length: int = 1


@dataclass(frozen=True)
class SequenceSpec:
    """What a hospital's sequence file must look like, agreed by the federation.

    Attributes
    ----------
    id_column : str
        Column identifying the patient (grouping only, never a feature).
    time_column : str
        Column of whole, non-negative time step numbers, unique within a patient.
    label : str
        Column of the patient's label, the same on each of its rows.
    features : tuple[str, ...]
        Numeric input columns, in channel order.
    classes : tuple[str, ...]
        Label values as written in the file; a class's index is its position.
    max_length : int
        Steps kept per patient (the most recent); shorter sequences are padded.
    min_length : int
        Fewest steps a patient may have.
    min_patients : int
        Fewest patients the file may hold.
    min_patients_per_class : int
        Fewest patients of each class (0: none of a class is needed).
    forward_fill : bool
        Whether feature cells may be empty (``missing = "forward-fill"``); the
        id, time and label cells never may.
    """

    id_column: str
    time_column: str
    label: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    max_length: int
    min_length: int = 1
    min_patients: int = 20
    min_patients_per_class: int = 1
    forward_fill: bool = False

    def __post_init__(self) -> None:
        _check_names(self)
        _check_classes(self.classes)
        _check_counts(self)

    def columns(self) -> tuple[str, ...]:
        """Return every column the file must have: id, time, features, then the label."""
        return (self.id_column, self.time_column, *self.features, self.label)


def _check_names(spec: SequenceSpec) -> None:
    if not isinstance(spec.features, tuple) or not spec.features:
        raise SequenceSpecError("field 'features': list at least one feature column, as a tuple")
    names = spec.columns()
    if any(not isinstance(name, str) or not name.strip() for name in names):
        raise SequenceSpecError(
            "fields 'id_column', 'time_column', 'label', 'features': every column name must be "
            "a non-empty string"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SequenceSpecError(
            f"column names {', '.join(repeated)} are given more than one role; the id, time, "
            "label and feature columns must all differ"
        )


def _check_classes(classes: tuple[str, ...]) -> None:
    if not isinstance(classes, tuple) or len(classes) < 2:
        raise SequenceSpecError("field 'classes': list at least two label values, as a tuple")
    if any(not isinstance(name, str) or not name for name in classes):
        raise SequenceSpecError("field 'classes': every class must be a non-empty string")
    if len(set(classes)) != len(classes):
        raise SequenceSpecError("field 'classes': every class must be listed once")


def _check_counts(spec: SequenceSpec) -> None:
    minimums = {
        "max_length": (spec.max_length, 1),
        "min_length": (spec.min_length, 1),
        "min_patients": (spec.min_patients, 1),
        "min_patients_per_class": (spec.min_patients_per_class, 0),
    }
    for field, (value, lowest) in minimums.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise SequenceSpecError(f"field '{field}': must be a whole number >= {lowest}")


# --- parsing a contract's sequence fields


def parse_sequence_layout(fields: FieldReader) -> SequenceLayout:
    """Parse the ``[sequences]`` table.

    Raises
    ------
    ContractError
        If it is missing, has an unknown key, a blank column, the id column as
        time column, or a length below 1.
    """
    table = fields.table("sequences", _SEQUENCE_KEYS)
    id_column = fields.column(table, "id_column", "sequences.id_column")
    time_column = fields.column(table, "time_column", "sequences.time_column")
    if time_column == id_column:
        raise fields.fail(
            "sequences.time_column",
            "is also the id_column; name the column of time step numbers",
        )
    lengths: dict[str, int] = {}
    for key, default in (("max_length", ...), ("min_length", 1)):
        field = f"sequences.{key}"
        lengths[key] = fields.value(table, key, field, int, default)
        if lengths[key] < 1:
            raise fields.fail(field, "must be at least 1 (time steps per patient)")
    return SequenceLayout(id_column=id_column, time_column=time_column, **lengths)


def parse_sequence_label(fields: FieldReader, layout: SequenceLayout) -> str:
    """Parse a sequence contract's ``label``: a column that is neither the id nor the time.

    Raises
    ------
    ContractError
        Naming the ``label`` field.
    """
    label = fields.column(fields.raw, "label", "label")
    roles = {layout.id_column: "id_column", layout.time_column: "time_column"}
    if label in roles:
        raise fields.fail(
            "label", f"is the [sequences] table's {roles[label]}; name the label column"
        )
    return label


def parse_sequence_missing(fields: FieldReader) -> MissingPolicy:
    """Parse a sequence contract's ``missing``: ``reject`` or ``forward-fill``.

    Raises
    ------
    ContractError
        Naming the ``missing`` field, for any other policy.
    """
    value = fields.get("missing", str, MissingPolicy.REJECT.value)
    if value not in SEQUENCE_POLICIES:
        raise fields.fail(
            "missing",
            'a sequence contract takes "reject" (no empty feature cell) or "forward-fill" '
            "(an empty cell carries the last observed value forward within the stay, and "
            "the model also sees where each feature was measured)",
        )
    return MissingPolicy(value)


def parse_sequence_features(
    fields: FieldReader, label: str, layout: SequenceLayout, missing: MissingPolicy
) -> tuple[Feature, ...]:
    """Parse a sequence contract's ``[features]``: numbers, none a column with another role.

    Under ``missing = "forward-fill"`` every feature needs a ``fill`` (its value
    before its first observation in a stay).

    Raises
    ------
    ContractError
        Naming the first feature field at fault.
    """
    tables = feature_tables(fields)
    roles = {
        label: "the label",
        layout.id_column: "the [sequences] table's id_column",
        layout.time_column: "the [sequences] table's time_column",
    }
    features = []
    for name, table in tables.items():
        _check_sequence_feature(fields, name, table, roles)
        features.append(
            parse_feature(fields, name, table, keys=SEQUENCE_FEATURE_KEYS, missing=missing)
        )
    return tuple(features)


def sequence_input_names(features: tuple[Feature, ...], missing: MissingPolicy) -> tuple[str, ...]:
    """Return the names of a sequence's channels, in order.

    The features; under ``forward-fill`` then each feature's ``NAME_observed``
    and each feature's ``NAME_since_observed`` channel
    (:mod:`shared.contract.missing`); last the padding mask, :data:`MASK_NAME`.
    """
    names = tuple(feature.name for feature in features)
    if missing is MissingPolicy.FORWARD_FILL:
        names += tuple(map(observed_name, names)) + tuple(map(since_name, names))
    return (*names, MASK_NAME)


def _check_sequence_feature(
    fields: FieldReader, name: str, table: Any, roles: dict[str, str]
) -> None:
    field = f"features.{name}"
    if not name.strip():
        raise fields.fail(field, "needs a column name that is not blank")
    if name in roles:
        raise fields.fail(field, f"is {roles[name]}; it cannot also be a feature: remove [{field}]")
    if name == MASK_NAME:
        raise fields.fail(
            field,
            "is the name of the mask channel fedcare adds to every sequence; rename "
            "the column in the file and the contract",
        )
    if isinstance(table, dict) and table.get("type") == FeatureType.CATEGORY.value:
        raise fields.fail(
            f"{field}.type",
            "category features are not supported in a sequences contract: every "
            "sequence feature must be a number; use float or int, and encode a "
            "category as 0/1 columns",
        )
