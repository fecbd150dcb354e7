"""Read a hospital's images from a ``.npz`` archive as MedMNIST publishes them.

The archive holds ``train_images`` and ``train_labels``, and optionally
``val_*`` and ``test_*``, which are loaded too and appended (the hospital makes
its own split). It is opened with ``allow_pickle=False``: unpickling a file can
run arbitrary code, and a hospital's file must never be able to do that.
Images may be ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)``, uint8 (0 to
255) or floats (0 to 1), at the contract's size.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcare.client.readers.image_problems import (
    ImageFileError,
    Problem,
    Rule,
    count_of,
    fail,
    problems_if,
    raise_if_any,
)
from fedcare.shared.contract import ImageSpec

SPLITS = ("train", "val", "test")
"""MedMNIST's splits, in the order their images are appended."""


@dataclass(frozen=True, eq=False)
class _Split:
    """One split's arrays, checked and converted, or the problems that stopped it."""

    images: np.ndarray | None
    labels: np.ndarray | None
    problems: tuple[Problem, ...]


def load_npz(path: Path, source: str, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read every split's images and labels from a MedMNIST-style ``.npz`` file.

    Returns
    -------
    images : numpy.ndarray
        float32 ``(n, C, H, W)`` in ``[0, 1]``: train, then val, then test images.
    labels : numpy.ndarray
        int64 ``(n,)`` class indices.

    Raises
    ------
    ImageFileError
        Listing every problem of the arrays; nothing is loaded.
    PermissionError
        If the file may not be read (the caller names it).
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError):
        # Not a zip archive: numpy would try to unpickle it, which allow_pickle=False refuses.
        raise _not_an_archive(source) from None
    except PermissionError:
        raise
    except OSError as error:
        raise fail(source, Rule.UNREADABLE, f"cannot be read ({error.strerror})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _not_an_archive(source)
    with archive:
        names = set(archive.files)
        raise_if_any(_missing_arrays(names, source))
        splits = [
            _split(archive, split, spec, source) for split in SPLITS if f"{split}_images" in names
        ]
    raise_if_any([problem for split in splits for problem in split.problems])
    images = [split.images for split in splits if split.images is not None]
    labels = [split.labels for split in splits if split.labels is not None]
    return np.concatenate(images), np.concatenate(labels)


def _not_an_archive(source: str) -> ImageFileError:
    return fail(
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
    problems = problems_if(
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
            f"{count_of(len(labels), 'label')} for {count_of(expected, 'image')}; every image "
            "needs exactly one label, in the same order"
        )
        problems.append(Problem(source, where, Rule.LENGTH_MISMATCH, None, hint))
    mapping = ", ".join(f"{index} = {name}" for index, name in enumerate(spec.classes))
    problems += problems_if(
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
