"""Parse a contract's TOML text into checked fields: the top level, then the format's tables.

The first rule a contract breaks is refused, naming the file, the field and
the fix (:class:`shared.contract.fields.ContractError`). Fields are checked in
a fixed order: unknown fields, the format, fields the format has no use for, the
task and its classes, the name and counts, then the format's own fields.
"""

from __future__ import annotations

import tomllib
from typing import TypedDict

from fedcare.shared.contract.features import (
    Feature,
    MissingPolicy,
    parse_table_features,
)
from fedcare.shared.contract.fields import ContractError, FieldReader
from fedcare.shared.contract.images import ImageLayout, check_image_classes, parse_image_layout
from fedcare.shared.contract.sequences import (
    SequenceLayout,
    parse_sequence_features,
    parse_sequence_label,
    parse_sequence_layout,
    parse_sequence_missing,
)
from fedcare.shared.data import InputKind
from fedcare.shared.tasks import TaskKind

_COMMON = {"name", "format", "task", "classes", "positive_class", "min_rows", "min_rows_per_class"}
_TOP_LEVEL = {
    InputKind.TABLE: _COMMON | {"label", "id_columns", "missing", "features"},
    InputKind.IMAGES: _COMMON | {"images"},
    InputKind.SEQUENCES: _COMMON | {"label", "missing", "features", "sequences"},
}
_KNOWN = set().union(*_TOP_LEVEL.values())
_TASKS = {
    InputKind.TABLE: (TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.REGRESSION),
    InputKind.IMAGES: (TaskKind.BINARY, TaskKind.MULTICLASS),
    InputKind.SEQUENCES: (TaskKind.BINARY, TaskKind.MULTICLASS),
}
_MISPLACED = {
    (InputKind.IMAGES, "label"): (
        "an images contract has no label column: an image's class is its label index in the "
        ".npz file or its class folder; remove label"
    ),
    (InputKind.IMAGES, "features"): (
        "images have no feature columns: their input is the [images] table's channels, height "
        "and width; remove the [features] tables"
    ),
    (InputKind.IMAGES, "id_columns"): "images have no columns; remove id_columns",
    (InputKind.IMAGES, "missing"): "an image has no missing cells; remove missing",
    (InputKind.SEQUENCES, "id_columns"): (
        "a sequence file holds only the id, time, feature and label columns; name the patient "
        "id in the [sequences] table's id_column and remove id_columns"
    ),
}


class ContractFields(TypedDict):
    """Every field of a :class:`shared.contract.DataContract`, parsed and checked."""

    name: str
    task_kind: TaskKind
    label: str
    classes: tuple[str, ...]
    positive_class: str | None
    id_columns: tuple[str, ...]
    missing: MissingPolicy
    min_rows: int
    min_rows_per_class: int
    features: tuple[Feature, ...]
    format: InputKind
    images: ImageLayout | None
    sequences: SequenceLayout | None
    source: str


def parse_contract_fields(text: str, *, source: str) -> ContractFields:
    """Parse contract TOML ``text`` into checked fields; ``source`` names it in errors.

    Raises
    ------
    ContractError
        If ``text`` is not TOML or breaks a rule, naming the field and the fix.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ContractError(f"contract {source} is not valid TOML: {error}") from None
    fields = FieldReader(raw, source)
    kind = _format(fields)
    task_kind = fields.enum("task", TaskKind, choices=_TASKS[kind], of=kind)
    classes, positive = _classes(fields, task_kind)
    common = ContractFields(
        name=fields.get("name", str),
        task_kind=task_kind,
        label="",
        classes=classes,
        positive_class=positive,
        id_columns=(),
        missing=MissingPolicy.REJECT,
        min_rows=fields.count("min_rows"),
        min_rows_per_class=fields.count("min_rows_per_class"),
        features=(),
        format=kind,
        images=None,
        sequences=None,
        source=source,
    )
    if kind is InputKind.IMAGES:
        check_image_classes(fields, classes)
        return {**common, "images": parse_image_layout(fields)}
    if kind is InputKind.SEQUENCES:
        return _sequence_fields(fields, common)
    return _table_fields(fields, common)


def _format(fields: FieldReader) -> InputKind:
    """Return the contract's format, once every top-level field is known and in place."""
    unknown = sorted(set(fields.raw) - _KNOWN)
    if unknown:
        raise fields.fail(
            unknown[0], f"is not a contract field; known fields: {', '.join(sorted(_KNOWN))}"
        )
    # Interaction files have no contract format yet: they are simulated only.
    kind = fields.enum("format", InputKind, InputKind.TABLE.value, choices=tuple(_TOP_LEVEL))
    misplaced = sorted(set(fields.raw) - _TOP_LEVEL[kind])
    if misplaced:
        raise fields.fail(misplaced[0], _misplaced(kind, misplaced[0]))
    return kind


def _misplaced(kind: InputKind, field: str) -> str:
    """Say why a known top-level ``field`` has no place in a ``kind`` contract, and the fix."""
    if field in ("images", "sequences"):
        return (
            f'describes {field} data, but the contract\'s format is "{kind}"; set '
            f'format = "{field}", or remove the [{field}] table'
        )
    return _MISPLACED.get((kind, field), f'is not used by a format = "{kind}" contract; remove it')


def _classes(fields: FieldReader, task_kind: TaskKind) -> tuple[tuple[str, ...], str | None]:
    """Return the classes and, for a binary task, the positive one."""
    if task_kind is TaskKind.REGRESSION:
        if "classes" in fields.raw or "positive_class" in fields.raw:
            raise fields.fail(
                "classes", "a regression contract has no classes; remove classes/positive_class"
            )
        return (), None
    classes = fields.strings("classes")
    wanted = 2 if task_kind is TaskKind.BINARY else 3
    if (task_kind is TaskKind.BINARY and len(classes) != 2) or len(classes) < wanted:
        exactly = "exactly 2" if wanted == 2 else "at least 3"
        raise fields.fail("classes", f"a {task_kind.value} task needs {exactly} classes")
    if task_kind is TaskKind.MULTICLASS:
        return tuple(classes), None
    positive: str = fields.get("positive_class", str)
    if positive not in classes:
        raise fields.fail("positive_class", "must be one of classes")
    return tuple(classes), positive


def _table_fields(fields: FieldReader, common: ContractFields) -> ContractFields:
    label: str = fields.get("label", str)
    id_columns = tuple(fields.strings("id_columns", default=[]))
    return {
        **common,
        "label": label,
        "id_columns": id_columns,
        "missing": fields.enum("missing", MissingPolicy, MissingPolicy.REJECT.value),
        "features": parse_table_features(fields, label, id_columns),
    }


def _sequence_fields(fields: FieldReader, common: ContractFields) -> ContractFields:
    layout = parse_sequence_layout(fields)
    label = parse_sequence_label(fields, layout)
    return {
        **common,
        "label": label,
        "missing": parse_sequence_missing(fields),
        "features": parse_sequence_features(fields, label, layout),
        "sequences": layout,
    }
