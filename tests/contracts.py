"""Contracts and specs the contract and reader tests share: their texts, parsing and builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcare.shared.contract import ContractError, DataContract, ImageSpec, SequenceSpec

TABLE_CONTRACT = """
name = "test-diagnosis"
task = "binary"
label = "diagnosis"
classes = ["benign", "malignant"]
positive_class = "malignant"
id_columns = ["patient_id"]
missing = "reject"
min_rows = 6
min_rows_per_class = 2

[features.age]
type = "int"
min = 0
max = 120

[features.radius]
type = "float"
min = 0.0
max = 50.0

[features.sex]
type = "category"
categories = ["F", "M"]
"""

IMAGE_CONTRACT = """
name = "chest-films"
format = "images"
task = "multiclass"
classes = ["normal", "nodule", "opacity"]
min_rows = 30
min_rows_per_class = 5

[images]
channels = 1
height = 28
width = 28
"""

VITALS = ("heart_rate", "systolic_bp", "resp_rate", "spo2", "temperature", "lactate")
"""The features of :data:`SEQUENCE_CONTRACT`, as ``make_vitals`` writes them."""

SEQUENCE_CONTRACT = """
name = "icu-deterioration"
format = "sequences"
task = "binary"
label = "deterioration"
classes = ["0", "1"]
positive_class = "1"
min_rows = 30
min_rows_per_class = 5

[sequences]
id_column = "patient_id"
time_column = "hour"
max_length = 12
min_length = 4

[features.heart_rate]
type = "float"
min = 0.0
max = 300.0

[features.systolic_bp]
type = "float"

[features.resp_rate]
type = "float"

[features.spo2]
type = "float"

[features.temperature]
type = "float"

[features.lactate]
type = "float"
min = 0.0
"""

CONTRACT_SOURCE = "contract.toml"
"""What parsed contracts are named after in their errors."""


def parse_contract(text: str = TABLE_CONTRACT) -> DataContract:
    """Parse ``text`` as the file ``contract.toml``."""
    return DataContract.parse(text, source=CONTRACT_SOURCE)


def edit(text: str, old: str, new: str) -> str:
    """Replace ``old`` in contract ``text``, which must hold it (a typo fails the test)."""
    assert old in text
    return text.replace(old, new)


def assert_refused_by_field(text: str, field: str) -> None:
    """Parsing ``text`` fails naming the file and ``field``, and says what to do about it."""
    with pytest.raises(ContractError) as caught:
        parse_contract(text)
    message = str(caught.value)
    assert "contract.toml" in message and f"field '{field}'" in message
    # Every refusal says what to do, not only what is wrong.
    assert len(message.split(f"field '{field}': ", 1)[1]) > 10


def write_contract(folder: Path, text: str = TABLE_CONTRACT) -> Path:
    """Write ``text`` as ``folder/contract.toml``; return its path."""
    path = folder / CONTRACT_SOURCE
    path.write_text(text, encoding="utf-8")
    return path


IMAGE_HEIGHT, IMAGE_WIDTH = 10, 12
IMAGE_CLASSES = ("benign", "malignant", "normal")


def image_spec(**changes: object) -> ImageSpec:
    """Return a small grayscale spec (10x12, three classes), with ``changes`` applied."""
    fields: dict[str, object] = {
        "channels": 1,
        "height": IMAGE_HEIGHT,
        "width": IMAGE_WIDTH,
        "classes": IMAGE_CLASSES,
        "min_images": 2,
        "min_images_per_class": 0,
    }
    fields.update(changes)
    return ImageSpec(**fields)  # type: ignore[arg-type]


SEQUENCE_FEATURES = ("heart_rate", "lactate")


def sequence_spec(**changes: object) -> SequenceSpec:
    """Return a small spec (two features, up to four steps), with ``changes`` applied."""
    fields: dict[str, object] = {
        "id_column": "patient_id",
        "time_column": "hour",
        "label": "outcome",
        "features": SEQUENCE_FEATURES,
        "classes": ("alive", "died"),
        "max_length": 4,
        "min_length": 1,
        "min_patients": 2,
        "min_patients_per_class": 1,
    }
    fields.update(changes)
    return SequenceSpec(**fields)  # type: ignore[arg-type]
