"""Images contracts (shared.contract.images): the [images] table and the spec images meet."""

from __future__ import annotations

import pytest

from fedcare.shared.contract import ImageSpecError
from fedcare.shared.data import InputKind
from fedcare.shared.tasks import TaskKind
from tests.contracts import (
    IMAGE_CONTRACT,
    TABLE_CONTRACT,
    assert_refused_by_field,
    edit,
    image_spec,
    parse_contract,
)


def test_image_contract_parses_into_shape_kind_and_spec() -> None:
    contract = parse_contract(IMAGE_CONTRACT)
    assert contract.input_kind() is InputKind.IMAGES
    assert contract.input_shape() == (1, 28, 28)
    assert contract.feature_names() == ("gray",)
    assert contract.task().kind is TaskKind.MULTICLASS and contract.task().num_classes == 3
    spec = contract.image_spec()
    assert (spec.channels, spec.height, spec.width) == (1, 28, 28)
    assert spec.classes == ("normal", "nodule", "opacity")
    assert (spec.min_images, spec.min_images_per_class) == (30, 5)


def test_rgb_image_contract_names_three_channels() -> None:
    contract = parse_contract(edit(IMAGE_CONTRACT, "channels = 1", "channels = 3"))
    assert contract.input_shape() == (3, 28, 28)
    assert contract.feature_names() == ("red", "green", "blue")


# --- malformed contracts and specs

MALFORMED = [
    ("unknown-format", edit(IMAGE_CONTRACT, '"images"\n', '"video"\n'), "format"),
    ("images-without-table", IMAGE_CONTRACT.split("[images]")[0], "images"),
    ("channels-two", edit(IMAGE_CONTRACT, "channels = 1", "channels = 2"), "images.channels"),
    ("channels-text", edit(IMAGE_CONTRACT, "channels = 1", 'channels = "1"'), "images.channels"),
    ("height-too-small", edit(IMAGE_CONTRACT, "height = 28", "height = 4"), "images.height"),
    ("width-too-large", edit(IMAGE_CONTRACT, "width = 28", "width = 4096"), "images.width"),
    ("no-width", edit(IMAGE_CONTRACT, "width = 28\n", ""), "images.width"),
    ("unknown-image-key", IMAGE_CONTRACT + 'mode = "L"\n', "images.mode"),
    (
        "image-regression",
        edit(
            IMAGE_CONTRACT,
            'task = "multiclass"\nclasses = ["normal", "nodule", "opacity"]\n',
            'task = "regression"\n',
        ),
        "task",
    ),  # fmt: skip
    (
        "image-class-not-a-folder-name",
        edit(IMAGE_CONTRACT, '"nodule"', '"nodule/left"'),
        "classes",
    ),
    ("image-with-label", 'label = "diagnosis"\n' + IMAGE_CONTRACT, "label"),
    ("image-with-features", IMAGE_CONTRACT + '[features.x]\ntype = "float"\n', "features"),
    (
        "table-with-images-table",
        TABLE_CONTRACT + "[images]\nchannels = 1\nheight = 28\nwidth = 28\n",
        "images",
    ),
]


@pytest.mark.parametrize(
    ("text", "field"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_contract_is_refused_by_field(text: str, field: str) -> None:
    assert_refused_by_field(text, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"channels": 4}, "channels"),
        ({"height": 7}, "height"),
        ({"width": 513}, "width"),
        ({"classes": ("only",)}, "classes"),
        ({"classes": ("a", "a")}, "classes"),
        ({"classes": ("a", "b/c")}, "classes"),
        ({"min_images": 0}, "min_images"),
        ({"min_images_per_class": -1}, "min_images_per_class"),
    ],
)
def test_inconsistent_spec(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ImageSpecError, match=field):
        image_spec(**changes)
