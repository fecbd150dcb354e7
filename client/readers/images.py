"""A hospital's images: read a MedMNIST-style ``.npz`` file or a folder of class folders.

Images reach a hospital in one of two layouts, and ``load_image_file`` picks the
reader from what the path is:

* a ``.npz`` archive as MedMNIST publishes them: ``train_images`` and
  ``train_labels``, and optionally ``val_*`` and ``test_*``, which are loaded
  too and appended (the hospital makes its own split). It is opened with
  ``allow_pickle=False``: unpickling a file can run arbitrary code, and a
  hospital's file must never be able to do that;
* a folder holding one sub-folder per class, named exactly as the contract's
  classes, each holding ``.png``, ``.jpg`` or ``.jpeg`` files, read with Pillow
  and converted to grayscale (``L``) or ``RGB`` as the contract says.

Images must already have the contract's size: they are never resized, because
resizing changes the very data the contract describes, and a silent resize at
one hospital would make its images differ from everyone else's.

Every problem found is collected and all are raised together in one
:class:`ImageFileError`; the counts of images come only once every image could
be read. A message names the file or folder, the array or class folder, the
rule and how many images or files fail it, but never a pixel value, a file
name or the name of an unexpected folder: file and folder names can hold
patient identifiers, and error messages travel into logs. Class names, sizes,
shapes and dtypes are the contract's or the format's, and are shown.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image

from fedcare.shared.errors import DataError

SPLITS = ("train", "val", "test")
"""MedMNIST's splits, in the order their images are appended."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""File suffixes (any case) read from a class folder."""

_MIN_SIDE = 8
_MAX_SIDE = 512
_MAX_SIZES_SHOWN = 3


class ImageSpecError(DataError):
    """An :class:`ImageSpec` is inconsistent; the message names the field and the fix."""


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
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ImageSpecError("field 'channels': must be 1 (grayscale) or 3 (RGB)")
        for field, side in (("height", self.height), ("width", self.width)):
            if not _whole(side) or not _MIN_SIDE <= side <= _MAX_SIDE:
                raise ImageSpecError(
                    f"field '{field}': must be a whole number of pixels from {_MIN_SIDE} to "
                    f"{_MAX_SIDE}"
                )
        _check_classes(self.classes)
        if not _whole(self.min_images) or self.min_images < 1:
            raise ImageSpecError("field 'min_images': must be a whole number >= 1")
        if not _whole(self.min_images_per_class) or self.min_images_per_class < 0:
            raise ImageSpecError("field 'min_images_per_class': must be a whole number >= 0")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_classes(classes: tuple[str, ...]) -> None:
    if not isinstance(classes, tuple) or len(classes) < 2:
        raise ImageSpecError("field 'classes': list at least two class names, as a tuple")
    for name in classes:
        # A class name is also a folder name: hidden or path-like names could never be found.
        if not isinstance(name, str) or not name or name.startswith(".") or "/" in name:
            raise ImageSpecError(
                "field 'classes': every class must be a non-empty name that can be a folder "
                "name (no '/', not starting with '.')"
            )
    if len(set(classes)) != len(classes):
        raise ImageSpecError("field 'classes': every class must be listed once")


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
        count = "" if self.failing is None else f" in {_count(self.failing, self.unit)}"
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


def load_image_file(path: Path, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read a hospital's images from a ``.npz`` file or a folder of class folders.

    Parameters
    ----------
    path : Path
        A MedMNIST-style ``.npz`` file, or a folder with one sub-folder per class
        (see the module docstring).
    spec : ImageSpec
        The federation's image contract.

    Returns
    -------
    images : numpy.ndarray
        float32 ``(n, spec.channels, spec.height, spec.width)`` in ``[0, 1]``.
        From a ``.npz``: train, then val, then test images, each in file order;
        from a folder: class by class in contract order, files sorted by name.
    labels : numpy.ndarray
        int64 ``(n,)`` class indices into ``spec.classes``.

    Raises
    ------
    ImageFileError
        Listing every problem found (see the module docstring).
    """
    source = str(path)
    try:
        if not path.exists():
            raise _fail(source, Rule.NOT_FOUND, "no such file or folder; check the data path")
        if path.is_dir():
            images, labels = _load_folder(path, source, spec)
        elif path.suffix.lower() == ".npz":
            images, labels = _load_npz(path, source, spec)
        else:
            raise _fail(
                source,
                Rule.UNSUPPORTED_FORMAT,
                f"fedcare reads images from a MedMNIST-style .npz file or from a folder with "
                f"one sub-folder per class, not from a '{path.suffix}' file",
            )
    except PermissionError:
        raise _fail(
            source, Rule.UNREADABLE, "permission denied; let fedcare's user read it"
        ) from None
    _raise_if_any(_count_problems(labels, spec, source, "folder" if path.is_dir() else "file"))
    return images, labels


def _count(count: int, unit: str) -> str:
    return f"{count} {unit}{'s' if count != 1 else ''}"


def _raise_if_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise ImageFileError(problems)


def _fail(source: str, rule: Rule, hint: str) -> ImageFileError:
    """Build an error about the file or folder as a whole: nothing more can be checked."""
    return ImageFileError([Problem(source, "file or folder", rule, None, hint)])


def _empty(spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    shape = (0, spec.channels, spec.height, spec.width)
    return np.zeros(shape, dtype=np.float32), np.zeros(0, dtype=np.int64)


def _count_problems(labels: np.ndarray, spec: ImageSpec, source: str, where: str) -> list[Problem]:
    problems = []
    if len(labels) < spec.min_images:
        problems.append(
            Problem(
                source,
                where,
                Rule.TOO_FEW_IMAGES,
                None,
                f"{_count(len(labels), 'image')} in all; the contract needs at least "
                f"{spec.min_images}",
            )
        )
    counts = np.bincount(labels, minlength=len(spec.classes))
    problems += [
        Problem(
            source,
            where,
            Rule.TOO_FEW_IMAGES_IN_CLASS,
            None,
            f"class '{name}' has {_count(int(count), 'image')}; the contract needs at least "
            f"{spec.min_images_per_class} of every class",
        )
        for name, count in zip(spec.classes, counts, strict=True)
        if count < spec.min_images_per_class
    ]
    return problems


# --- the .npz layout


@dataclass(frozen=True, eq=False)
class _Split:
    """One split's arrays, checked and converted, or the problems that stopped it."""

    images: np.ndarray | None
    labels: np.ndarray | None
    problems: tuple[Problem, ...]


def _load_npz(path: Path, source: str, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError):
        # Not a zip archive: numpy would try to unpickle it, which allow_pickle=False refuses.
        raise _not_an_archive(source) from None
    except PermissionError:
        raise
    except OSError as error:
        raise _fail(source, Rule.UNREADABLE, f"cannot be read ({error.strerror})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _not_an_archive(source)
    with archive:
        names = set(archive.files)
        _raise_if_any(_missing_arrays(names, source))
        splits = [
            _split(archive, split, spec, source) for split in SPLITS if f"{split}_images" in names
        ]
    _raise_if_any([problem for split in splits for problem in split.problems])
    images = [split.images for split in splits if split.images is not None]
    labels = [split.labels for split in splits if split.labels is not None]
    return np.concatenate(images), np.concatenate(labels)


def _not_an_archive(source: str) -> ImageFileError:
    return _fail(
        source,
        Rule.MALFORMED,
        "not a readable .npz archive of arrays; save the images with numpy.savez (or "
        "savez_compressed) as train_images and train_labels",
    )


def _missing_arrays(names: set[str], source: str) -> list[Problem]:
    required = {"train_images", "train_labels"}
    for split in SPLITS[1:]:
        pair = {f"{split}_images", f"{split}_labels"}
        if names & pair:
            required |= pair
    return [
        Problem(
            source,
            f"array '{name}'",
            Rule.MISSING_ARRAY,
            None,
            "the file must hold images and labels as train_images and train_labels, and val_ "
            "or test_ arrays only in pairs; add this array or remove its partner",
        )
        for name in sorted(required - names)
    ]


def _split(archive: np.lib.npyio.NpzFile, split: str, spec: ImageSpec, source: str) -> _Split:
    images_name, labels_name = f"{split}_images", f"{split}_labels"
    images, images_problems = _array(archive, images_name, source)
    labels, labels_problems = _array(archive, labels_name, source)
    problems = [*images_problems, *labels_problems]
    if images is not None:
        images, found = _pixels(images, spec, source, f"array '{images_name}'")
        problems += found
    if labels is not None:
        expected = None if images is None else len(images)
        labels, found = _labels(labels, spec, expected, source, f"array '{labels_name}'")
        problems += found
    if problems:
        return _Split(None, None, tuple(problems))
    return _Split(images, labels, ())


def _array(
    archive: np.lib.npyio.NpzFile, name: str, source: str
) -> tuple[np.ndarray | None, list[Problem]]:
    try:
        return archive[name], []
    except (ValueError, OSError, zipfile.BadZipFile, EOFError):
        hint = (
            "cannot be read as a plain numeric array: it is stored as Python objects, which "
            "fedcare never unpickles, or it is damaged; save numeric arrays with numpy.savez"
        )
        return None, [Problem(source, f"array '{name}'", Rule.UNREADABLE_ARRAY, None, hint)]


def _pixels(
    images: np.ndarray, spec: ImageSpec, source: str, where: str
) -> tuple[np.ndarray | None, list[Problem]]:
    """Check an images array and convert it to float32 ``(n, C, H, W)`` in ``[0, 1]``."""
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        hint = (
            f"images are stored as {images.dtype}; the contract needs uint8 (0 to 255) or "
            "float (0.0 to 1.0); convert the array"
        )
        return None, [Problem(source, where, Rule.WRONG_DTYPE, None, hint)]
    first, problem = _channels_first(images, spec, source, where)
    if first is None:
        return None, [problem] if problem else []
    if first.dtype == np.uint8:
        return first.astype(np.float32) / np.float32(255.0), []
    return _unit_floats(first, source, where)


def _channels_first(
    images: np.ndarray, spec: ImageSpec, source: str, where: str
) -> tuple[np.ndarray | None, Problem | None]:
    """Return ``(n, C, H, W)`` images, telling the layout apart by the contract's size."""
    size = (spec.height, spec.width)
    if images.ndim == 3 and images.shape[1:] == size:
        first = images[:, np.newaxis]
    elif images.ndim == 4 and images.shape[1:3] == size and images.shape[3] <= 4:
        first = images.transpose(0, 3, 1, 2)
    elif images.ndim == 4 and images.shape[2:] == size and images.shape[1] <= 4:
        first = images
    else:
        return None, _layout_problem(images.shape, spec, source, where)
    if first.shape[1] != spec.channels:
        hint = (
            f"images have {first.shape[1]} channels; the contract says {spec.channels} "
            f"({_mode_name(spec.channels)}); convert them to {_mode_name(spec.channels)}"
        )
        return None, Problem(source, where, Rule.WRONG_CHANNELS, None, hint)
    return first, None


def _layout_problem(shape: tuple[int, ...], spec: ImageSpec, source: str, where: str) -> Problem:
    if len(shape) not in (3, 4):
        hint = (
            f"images must be shaped (n, H, W), (n, H, W, C) or (n, C, H, W); found {len(shape)} "
            "dimensions"
        )
        return Problem(source, where, Rule.WRONG_SHAPE, None, hint)
    found = shape[1:3] if len(shape) == 3 or shape[-1] <= 4 else shape[2:4]
    hint = (
        f"images are {found[0]}x{found[1]} (height x width) but the contract says "
        f"{spec.height}x{spec.width}; fedcare never resizes, so export the images at the "
        "contract's size (or use the MedMNIST size the contract names)"
    )
    return Problem(source, where, Rule.WRONG_SIZE, None, hint)


def _mode_name(channels: int) -> str:
    return "grayscale" if channels == 1 else "RGB"


def _unit_floats(
    images: np.ndarray, source: str, where: str
) -> tuple[np.ndarray | None, list[Problem]]:
    per_image = images.reshape(len(images), -1)
    finite = np.isfinite(per_image).all(axis=1)
    # Only finite images are judged for range: a NaN is reported once, as not finite.
    inside = ((per_image >= 0.0) & (per_image <= 1.0)).all(axis=1)
    problems = _problems_if(
        source,
        where,
        [
            (
                Rule.NOT_FINITE,
                int(np.count_nonzero(~finite)),
                "float pixels must be finite (no NaN, inf); fix or remove those images",
            ),
            (
                Rule.OUT_OF_RANGE,
                int(np.count_nonzero(finite & ~inside)),
                "float pixels must lie in [0, 1]; for 0..255 data divide by 255 or store uint8",
            ),
        ],
    )
    if problems:
        return None, problems
    return images.astype(np.float32), []


def _labels(
    labels: np.ndarray, spec: ImageSpec, expected: int | None, source: str, where: str
) -> tuple[np.ndarray | None, list[Problem]]:
    """Check a labels array and return it as int64 ``(n,)`` class indices."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        hint = (
            f"labels must be shaped (n,) or (n, 1), one class index per image; found shape "
            f"{labels.shape} (multi-label data is not supported)"
        )
        return None, [Problem(source, where, Rule.WRONG_SHAPE, None, hint)]
    if not np.issubdtype(labels.dtype, np.integer):
        hint = (
            f"labels are stored as {labels.dtype}; they must be integer class indices "
            f"0 to {len(spec.classes) - 1}; convert the array"
        )
        return None, [Problem(source, where, Rule.WRONG_DTYPE, None, hint)]
    problems = []
    if expected is not None and len(labels) != expected:
        hint = (
            f"{_count(len(labels), 'label')} for {_count(expected, 'image')}; every image needs "
            "exactly one label, in the same order"
        )
        problems.append(Problem(source, where, Rule.LENGTH_MISMATCH, None, hint))
    mapping = ", ".join(f"{index} = {name}" for index, name in enumerate(spec.classes))
    problems += _problems_if(
        source,
        where,
        [
            (
                Rule.LABEL_OUT_OF_RANGE,
                int(np.count_nonzero((labels < 0) | (labels >= len(spec.classes)))),
                f"labels must be class indices of the contract ({mapping}); recode those labels",
            )
        ],
    )
    return (None, problems) if problems else (labels.astype(np.int64), [])


def _problems_if(
    source: str, where: str, checks: Sequence[tuple[Rule, int, str]], unit: str = "image"
) -> list[Problem]:
    """One problem per check that some images (or files) fail, with how many fail it."""
    return [
        Problem(source, where, rule, count, hint, unit) for rule, count, hint in checks if count
    ]


# --- the folder layout


@dataclass(frozen=True, eq=False)
class _ClassFolder:
    """One class folder's images as uint8 ``(n, C, H, W)``, and what stopped the others."""

    images: list[np.ndarray]
    problems: list[Problem]


def _load_folder(path: Path, source: str, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    entries = _visible(path)
    folders = {entry.name: entry for entry in entries if entry.is_dir()}
    problems = _layout_problems(entries, folders, source, spec)
    read = {
        name: _read_class_folder(folders[name], source, name, spec)
        for name in spec.classes
        if name in folders
    }
    problems += [problem for folder in read.values() for problem in folder.problems]
    _raise_if_any(problems)
    images = [image for folder in read.values() for image in folder.images]
    if not images:
        return _empty(spec)
    labels = [
        np.full(len(read[name].images), index, dtype=np.int64)
        for index, name in enumerate(spec.classes)
    ]
    return np.stack(images).astype(np.float32) / np.float32(255.0), np.concatenate(labels)


def _visible(folder: Path) -> list[Path]:
    """List the entries, sorted, less hidden ones (``.DS_Store``, ``.ipynb_checkpoints``)."""
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _layout_problems(
    entries: list[Path], folders: dict[str, Path], source: str, spec: ImageSpec
) -> list[Problem]:
    classes = ", ".join(spec.classes)
    problems = [
        Problem(
            source,
            f"class folder '{name}'",
            Rule.MISSING_CLASS_FOLDER,
            None,
            f"the folder needs one sub-folder per class ({classes}); add this one",
        )
        for name in spec.classes
        if name not in folders
    ]
    # Their names are not shown: a folder could be named after a patient.
    unknown = sum(1 for name in folders if name not in spec.classes)
    loose = sum(1 for entry in entries if not entry.is_dir())
    checks = [
        (
            Rule.UNKNOWN_FOLDER,
            unknown,
            "folder",
            f"sub-folders must be named exactly as the contract's classes ({classes}); "
            "rename or remove the others",
        ),
        (
            Rule.LOOSE_FILE,
            loose,
            "file",
            f"image files must sit inside a class folder ({classes}); move these files into "
            "their class folder, or remove them",
        ),
    ]
    problems += [
        Problem(source, "folder", rule, count, hint, unit)
        for rule, count, unit, hint in checks
        if count
    ]
    return problems


def _read_class_folder(folder: Path, source: str, name: str, spec: ImageSpec) -> _ClassFolder:
    entries = _visible(folder)
    files = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
    outcomes = [_read_image(file, spec) for file in files]
    images = [outcome for outcome in outcomes if isinstance(outcome, np.ndarray)]
    failures = [outcome for outcome in outcomes if not isinstance(outcome, np.ndarray)]
    where = f"class folder '{name}'"
    problems = _problems_if(
        source,
        where,
        [
            (
                Rule.NOT_AN_IMAGE_FILE,
                len(entries) - len(files),
                "only .png, .jpg and .jpeg files are read (no sub-folders); convert or move "
                "the other entries",
            ),
            (
                Rule.UNREADABLE_IMAGE,
                failures.count(_Failure.UNREADABLE),
                "Pillow cannot read these files (damaged or not really images); export them again",
            ),
            (
                Rule.UNSUPPORTED_DEPTH,
                failures.count(_Failure.DEEP),
                "16-bit or floating-point images would be clipped when converted; export them "
                "as 8-bit PNG or JPEG",
            ),
        ],
        unit="file",
    )
    problems += _size_problems(failures, source, where, spec)
    return _ClassFolder(images=images, problems=problems)


class _Failure(StrEnum):
    """Why an image file of the right size could not be used."""

    UNREADABLE = "unreadable"
    DEEP = "deep"


def _read_image(file: Path, spec: ImageSpec) -> np.ndarray | _Failure | tuple[int, int]:
    """Read an image as uint8 ``(C, H, W)``; else say why not: a reason, or its (height, width)."""
    try:
        with Image.open(file) as image:
            # Checked before decoding: a wrong size fails anyway, and so costs no decoding.
            if image.size != (spec.width, spec.height):
                return image.size[1], image.size[0]
            if image.mode.startswith(("I", "F")):
                return _Failure.DEEP
            pixels = np.asarray(image.convert("L" if spec.channels == 1 else "RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return _Failure.UNREADABLE
    return pixels[np.newaxis] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _size_problems(
    failures: list[_Failure | tuple[int, int]], source: str, where: str, spec: ImageSpec
) -> list[Problem]:
    sizes = [failure for failure in failures if isinstance(failure, tuple)]
    if not sizes:
        return []
    distinct = sorted(set(sizes))
    shown = ", ".join(f"{height}x{width}" for height, width in distinct[:_MAX_SIZES_SHOWN])
    hidden = len(distinct) - _MAX_SIZES_SHOWN
    more = f" and {hidden} more" if hidden > 0 else ""
    hint = (
        f"images must be {spec.height}x{spec.width} (height x width) as the contract says; "
        f"found {shown}{more}; fedcare never resizes, so export them at the contract's size"
    )
    return [Problem(source, where, Rule.WRONG_SIZE, len(sizes), hint, unit="file")]
