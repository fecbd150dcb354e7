"""How a hospital's images fail the image contract: rules, problems and the error.

A problem names the ``.npz`` file or folder, the array or class folder, the rule
and how many images or files fail it, but never a pixel value, a file name or
the name of an unexpected folder: file and folder names can hold patient
identifiers, and error messages travel into logs. Class names, sizes, shapes
and dtypes are the contract's or the format's, and are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from fedcare.shared.errors import DataError


class Rule(StrEnum):
    """Every check a hospital's images can fail, by its stable name."""

    NOT_FOUND = "not-found"
    UNSUPPORTED_FORMAT = "unsupported-format"
    UNREADABLE = "unreadable"
    MALFORMED = "malformed-file"
    MISSING_ARRAY = "missing-array"
    UNREADABLE_ARRAY = "unreadable-array"
    WRONG_DTYPE = "wrong-dtype"
    WRONG_SHAPE = "wrong-shape"
    WRONG_SIZE = "wrong-size"
    WRONG_CHANNELS = "wrong-channels"
    LENGTH_MISMATCH = "length-mismatch"
    NOT_FINITE = "not-finite"
    OUT_OF_RANGE = "out-of-range"
    LABEL_OUT_OF_RANGE = "label-out-of-range"
    UNKNOWN_FOLDER = "unknown-folder"
    MISSING_CLASS_FOLDER = "missing-class-folder"
    LOOSE_FILE = "loose-file"
    NOT_AN_IMAGE_FILE = "not-an-image-file"
    UNREADABLE_IMAGE = "unreadable-image"
    UNSUPPORTED_DEPTH = "unsupported-depth"
    TOO_FEW_IMAGES = "too-few-images"
    TOO_FEW_IMAGES_IN_CLASS = "too-few-images-in-class"


@dataclass(frozen=True)
class Problem:
    """One way a hospital's images break the contract; carries no pixel and no file name.

    Attributes
    ----------
    source : str
        The ``.npz`` file or the folder checked.
    where : str
        The part at fault: ``"file"``, ``"folder"``, ``"array 'train_images'"``
        or ``"class folder 'malignant'"``.
    rule : Rule
        The check that failed.
    failing : int | None
        How many images, files or folders (see ``unit``) fail it; ``None`` when
        the rule is not about individual ones.
    hint : str
        What the rule requires and how to fix the data.
    unit : str
        What ``failing`` counts.
    """

    source: str
    where: str
    rule: Rule
    failing: int | None
    hint: str
    unit: str = "image"

    def __str__(self) -> str:
        count = "" if self.failing is None else f" in {count_of(self.failing, self.unit)}"
        return f"{self.source}: {self.where}: {self.rule}{count}: {self.hint}"


class ImageFileError(DataError):
    """A hospital's images break the contract; ``problems`` lists every way they do.

    Parameters
    ----------
    problems : Sequence[Problem]
        At least one problem, all about the same file or folder.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        title = (
            f"{self.problems[0].source} does not meet the image contract "
            f"({count} problem{'s' if count != 1 else ''}); no image was loaded:"
        )
        super().__init__("\n".join([title, *(f"  {problem}" for problem in self.problems)]))


def count_of(count: int, unit: str) -> str:
    """Return ``count`` and ``unit``, plural unless ``count`` is 1 (``"2 images"``)."""
    return f"{count} {unit}{'s' if count != 1 else ''}"


def raise_if_any(problems: Sequence[Problem]) -> None:
    """Raise an :class:`ImageFileError` listing ``problems``, if there are any."""
    if problems:
        raise ImageFileError(problems)


def fail(source: str, rule: Rule, hint: str) -> ImageFileError:
    """Build an error about the file or folder as a whole: nothing more can be checked."""
    return ImageFileError([Problem(source, "file or folder", rule, None, hint)])


def problems_if(
    source: str, where: str, checks: Sequence[tuple[Rule, int, str]], unit: str = "image"
) -> list[Problem]:
    """Return one problem per check that some images (or files) fail, with how many fail it."""
    return [
        Problem(source, where, rule, count, hint, unit) for rule, count, hint in checks if count
    ]
