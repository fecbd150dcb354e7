"""Image contracts: the ``[images]`` table, and the spec a hospital's images are held to.

An images contract fixes every image's channels and size (:class:`ImageLayout`);
together with the classes and the minimum counts that makes the
:class:`ImageSpec` the hospital's image reader (:mod:`client.readers.images`)
checks its files against. Both live here so that the aggregator, which never
reads an image, needs nothing of the reader.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcare.shared.contract.fields import FieldReader
from fedcare.shared.errors import DataError

IMAGE_CHANNEL_NAMES = {1: ("gray",), 3: ("red", "green", "blue")}
"""Feature names of an image's channels, by channel count."""

MIN_SIDE = 8
"""Fewest pixels an image's height or width may have."""

MAX_SIDE = 512
"""Most pixels an image's height or width may have (images are never resized)."""

_IMAGE_KEYS = {"channels", "height", "width"}


class ImageSpecError(DataError):
    """An :class:`ImageSpec` is inconsistent; the message names the field and the fix."""


@dataclass(frozen=True)
class ImageLayout:
    """The ``[images]`` table: every image's channels and size.

    Attributes
    ----------
    channels : int
        1 (grayscale) or 3 (RGB).
    height, width : int
        Size in pixels, 8 to 512; images are never resized.
    """

    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class ImageSpec:
    """What a hospital's images must look like, agreed by the federation.

    Attributes
    ----------
    channels : int
        1 (grayscale) or 3 (RGB).
    height, width : int
        Image size in pixels, each 8 to 512.
    classes : tuple[str, ...]
        Class names; a class's index is its position, and in the folder layout
        each is the name of its sub-folder.
    min_images : int
        Fewest images in all.
    min_images_per_class : int
        Fewest images of each class.
    """

    channels: int
    height: int
    width: int
    classes: tuple[str, ...]
    min_images: int = 20
    min_images_per_class: int = 1

    def __post_init__(self) -> None:
        if self.channels not in IMAGE_CHANNEL_NAMES or isinstance(self.channels, bool):
            raise ImageSpecError("field 'channels': must be 1 (grayscale) or 3 (RGB)")
        for field, side in (("height", self.height), ("width", self.width)):
            if not _whole(side) or not MIN_SIDE <= side <= MAX_SIDE:
                raise ImageSpecError(
                    f"field '{field}': must be a whole number of pixels from {MIN_SIDE} to "
                    f"{MAX_SIDE}"
                )
        _check_spec_classes(self.classes)
        if not _whole(self.min_images) or self.min_images < 1:
            raise ImageSpecError("field 'min_images': must be a whole number >= 1")
        if not _whole(self.min_images_per_class) or self.min_images_per_class < 0:
            raise ImageSpecError("field 'min_images_per_class': must be a whole number >= 0")


def is_folder_name(name: str) -> bool:
    """Return whether class ``name`` can be the name of its class folder.

    A class is also the name of its folder, so hidden (``.x``) or path-like
    (``a/b``, or with a backslash) names could never be found.
    """
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_spec_classes(classes: tuple[str, ...]) -> None:
    if not isinstance(classes, tuple) or len(classes) < 2:
        raise ImageSpecError("field 'classes': list at least two class names, as a tuple")
    if not all(isinstance(name, str) and is_folder_name(name) for name in classes):
        raise ImageSpecError(
            "field 'classes': every class must be a non-empty name that can be a folder "
            "name (no '/' or '\\', not starting with '.')"
        )
    if len(set(classes)) != len(classes):
        raise ImageSpecError("field 'classes': every class must be listed once")


def check_image_classes(fields: FieldReader, classes: tuple[str, ...]) -> None:
    """Refuse an images contract's class that could not be a class folder's name.

    Raises
    ------
    ContractError
        Naming the ``classes`` field and the fix.
    """
    if not all(is_folder_name(name) for name in classes):
        raise fields.fail(
            "classes",
            "an image class is also the name of its class folder; use names without "
            "'/' or '\\' that do not start with '.'",
        )


def parse_image_layout(fields: FieldReader) -> ImageLayout:
    """Parse the ``[images]`` table.

    Raises
    ------
    ContractError
        If it is missing, has an unknown key, or a channel count or side the
        contract cannot hold.
    """
    table = fields.table("images", _IMAGE_KEYS)
    channels: int = fields.value(table, "channels", "images.channels", int)
    if channels not in IMAGE_CHANNEL_NAMES:
        raise fields.fail("images.channels", "must be 1 (grayscale) or 3 (RGB)")
    sides = []
    for key in ("height", "width"):
        side: int = fields.value(table, key, f"images.{key}", int)
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise fields.fail(
                f"images.{key}",
                f"must be {MIN_SIDE} to {MAX_SIDE} pixels; images are never resized, so "
                "give the size the hospitals' images are stored at",
            )
        sides.append(side)
    return ImageLayout(channels=channels, height=sides[0], width=sides[1])
