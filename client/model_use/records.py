"""One input at a time: the contract as a per-record schema, and records as model inputs.

The hospital's file readers check a whole file and refuse it on any problem. A
prediction service, and ``fedcare predict``, need the same rules applied to one
patient at a time, so that one bad record is answered on its own and the others
still get their predictions. This module states the contract's rules once, as
pydantic models built from the contract: a table row (each feature with its
type, range or categories), a stay (its time steps, at least ``min_length``,
each time step once) or an image (the contract's channels and size, pixels in
[0, 1]). Validation errors name the record's field, never its value. No label
is needed: a record is something to predict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from fedcare.shared.contract import DataContract, Feature, FeatureType
from fedcare.shared.data import InputKind
from fedcare.shared.sequences import to_padded

STEPS_FIELD = "steps"
PIXELS_FIELD = "pixels"
ID_FIELD = "id"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_STRICT = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class RecordProblem:
    """Why one record was not scored: the field at fault and the rule, never the value.

    Attributes
    ----------
    position : int
        The record's position in what was checked, from 0.
    record : str
        The record's id (or its position when it has none).
    field : str
        The field at fault, dotted (``steps.3.heart_rate``), or ``""`` for the record.
    message : str
        What the field must be.
    """

    position: int
    record: str
    field: str
    message: str

    def __str__(self) -> str:
        where = f"field '{self.field}'" if self.field else "the record"
        return f"{self.record}: {where}: {self.message}"


def record_schema(contract: DataContract) -> type[BaseModel]:
    """Build the pydantic model of one input record under ``contract``.

    A table record has a field per feature (named as in the contract) and
    optional id fields; a stay has its id and a list of time steps; an image
    its id and its pixels as nested lists. Unknown fields are refused, so a
    misspelt feature is named rather than ignored.
    """
    kind = contract.input_kind()
    if kind is InputKind.IMAGES:
        return _image_schema(contract)
    if kind is InputKind.SEQUENCES:
        return _stay_schema(contract)
    fields: dict[str, Any] = {
        _name(position): (str | None, Field(None, alias=column))
        for position, column in enumerate(contract.id_columns)
    }
    offset = len(fields)
    for position, feature in enumerate(contract.features):
        fields[_name(offset + position)] = (_feature_type(feature), Field(alias=feature.name))
    record: type[BaseModel] = create_model("PatientRecord", __config__=_STRICT, **fields)
    return record


def _name(position: int) -> str:
    # Python names for the fields; the contract's column names are their aliases.
    return f"field_{position}"


def _feature_type(feature: Feature) -> Any:
    if feature.type is FeatureType.CATEGORY:
        return Literal[feature.categories]
    low = feature.minimum if feature.minimum is not None else -_FLOAT32_MAX
    high = feature.maximum if feature.maximum is not None else _FLOAT32_MAX
    number = int if feature.type is FeatureType.INT else float
    return Annotated[number, Field(ge=low, le=high, allow_inf_nan=False)]


def _stay_schema(contract: DataContract) -> type[BaseModel]:
    layout = contract.sequences
    assert layout is not None  # a sequences contract always has its layout
    step_fields: dict[str, Any] = {
        _name(0): (Annotated[int, Field(ge=0)], Field(alias=layout.time_column))
    }
    for position, feature in enumerate(contract.features, start=1):
        step_fields[_name(position)] = (_feature_type(feature), Field(alias=feature.name))
    step = create_model("TimeStep", __config__=_STRICT, **step_fields)

    def unique_times(steps: list[BaseModel]) -> list[BaseModel]:
        times = [getattr(one, _name(0)) for one in steps]
        if len(set(times)) != len(times):
            raise ValueError(f"each {layout.time_column} may appear once in a stay")
        return steps

    fields: dict[str, Any] = {
        ID_FIELD: (str | None, Field(None, alias=layout.id_column)),
        STEPS_FIELD: (list[step], Field(min_length=layout.min_length)),  # type: ignore[valid-type]
    }
    stay: type[BaseModel] = create_model(
        "Stay",
        __config__=_STRICT,
        __validators__={"unique_times": field_validator(STEPS_FIELD)(unique_times)},
        **fields,
    )
    return stay


def _image_schema(contract: DataContract) -> type[BaseModel]:
    layout = contract.images
    assert layout is not None  # an images contract always has its layout
    mode = "grayscale" if layout.channels == 1 else "RGB"
    shapes: list[tuple[int, ...]] = [(layout.channels, layout.height, layout.width)]
    shapes += [(layout.height, layout.width)] if layout.channels == 1 else []
    shapes += [(layout.height, layout.width, layout.channels)]
    expected = " or ".join("x".join(str(side) for side in shape) for shape in shapes)

    def pixel_grid(pixels: list[Any]) -> list[Any]:
        try:
            grid = np.asarray(pixels, dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"must be a {mode} image as nested lists of numbers") from None
        if grid.shape not in shapes:
            raise ValueError(f"must be shaped {expected} ({mode}); images are never resized")
        if not np.all(np.isfinite(grid) & (grid >= 0.0) & (grid <= 1.0)):
            raise ValueError("pixels must be numbers from 0.0 to 1.0 (divide 8-bit values by 255)")
        return pixels

    fields: dict[str, Any] = {
        ID_FIELD: (str | None, Field(None)),
        PIXELS_FIELD: (list[Any], Field(description=f"{expected} ({mode}), values 0 to 1")),
    }
    image: type[BaseModel] = create_model(
        "Image",
        __config__=_STRICT,
        __validators__={"pixel_grid": field_validator(PIXELS_FIELD)(pixel_grid)},
        **fields,
    )
    return image


def check_records(
    schema: type[BaseModel], raw: Sequence[dict[str, Any]], ids: Sequence[str]
) -> tuple[list[BaseModel], list[int], list[RecordProblem]]:
    """Validate each raw record on its own.

    Returns
    -------
    records : list[BaseModel]
        The records that meet the contract.
    positions : list[int]
        Their positions in ``raw``.
    problems : list[RecordProblem]
        One entry per field at fault in the others (named by ``ids``).
    """
    records, positions, problems = [], [], []
    for position, (entry, record_id) in enumerate(zip(raw, ids, strict=True)):
        try:
            records.append(schema.model_validate(entry))
            positions.append(position)
        except ValidationError as error:
            problems += [
                RecordProblem(
                    position, record_id, ".".join(str(part) for part in issue["loc"]), issue["msg"]
                )
                for issue in error.errors(include_input=False, include_url=False)
            ]
    return records, positions, problems


def encode_records(contract: DataContract, records: Sequence[BaseModel]) -> np.ndarray:
    """Turn valid records into raw (unstandardised) model inputs, in record order.

    Returns
    -------
    np.ndarray
        float32 ``(n, features)`` for tables (categories one-hot, as
        :func:`client.readers.table.load_site_table` encodes them), ``(n, max_length,
        features + 1)`` padded stays with their mask channel, or ``(n, channels,
        height, width)`` images.
    """
    kind = contract.input_kind()
    if kind is InputKind.IMAGES:
        return _encode_images(contract, records)
    if kind is InputKind.SEQUENCES:
        return _encode_stays(contract, records)
    offset = len(contract.id_columns)
    rows = np.zeros((len(records), len(contract.feature_names())), dtype=np.float32)
    for row, record in enumerate(records):
        column = 0
        for position, feature in enumerate(contract.features):
            value = getattr(record, _name(offset + position))
            if feature.type is FeatureType.CATEGORY:
                rows[row, column + feature.categories.index(value)] = 1.0
                column += len(feature.categories)
            else:
                rows[row, column] = float(value)
                column += 1
    return rows


def _encode_stays(contract: DataContract, records: Sequence[BaseModel]) -> np.ndarray:
    layout = contract.sequences
    assert layout is not None
    names = [feature.name for feature in contract.features]
    if not records:
        return np.zeros((0, layout.max_length, len(names) + 1), dtype=np.float32)
    rows = [
        # The stay's position is its id here, so the padded stays keep record order.
        (stay, getattr(step, _name(0)), *(getattr(step, _name(i + 1)) for i in range(len(names))))
        for stay, record in enumerate(records)
        for step in getattr(record, STEPS_FIELD)
    ]
    frame = pd.DataFrame(rows, columns=["stay", "time", *names]).assign(label=0)
    inputs, _, _ = to_padded(
        frame,
        id_column="stay",
        time_column="time",
        features=names,
        label="label",
        max_length=layout.max_length,
    )
    return inputs


def _encode_images(contract: DataContract, records: Sequence[BaseModel]) -> np.ndarray:
    layout = contract.images
    assert layout is not None
    shape = (layout.channels, layout.height, layout.width)
    images = np.zeros((len(records), *shape), dtype=np.float32)
    for row, record in enumerate(records):
        grid = np.asarray(getattr(record, PIXELS_FIELD), dtype=np.float32)
        if grid.shape == (layout.height, layout.width):
            grid = grid[np.newaxis]
        elif grid.shape == (layout.height, layout.width, layout.channels):
            grid = grid.transpose(2, 0, 1)
        images[row] = grid
    return images


def record_id(contract: DataContract, record: BaseModel) -> str | None:
    """Return the id a valid record carries (a table's first id column), or ``None``."""
    if contract.input_kind() is InputKind.TABLE:
        if not contract.id_columns:
            return None
        value = getattr(record, _name(0))
    else:
        value = getattr(record, ID_FIELD)
    return None if value is None else str(value)
