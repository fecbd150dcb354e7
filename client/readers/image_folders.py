"""Read a hospital's images from a folder of class folders, one per contract class.

Each class folder, named exactly as the contract's class, holds ``.png``,
``.jpg`` or ``.jpeg`` files, read with Pillow and converted to grayscale
(``L``) or ``RGB`` as the contract says. Hidden entries (``.DS_Store``) are
ignored. Unknown folders and loose files are counted, never named: a folder or
file could be named after a patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image

from fedcare.client.readers.image_problems import Problem, Rule, problems_if, raise_if_any
from fedcare.shared.contract import ImageSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
"""File suffixes (any case) read from a class folder."""

_MAX_SIZES_SHOWN = 3


@dataclass(frozen=True, eq=False)
class _ClassFolder:
    """One class folder's images as uint8 ``(n, C, H, W)``, and what stopped the others."""

    images: list[np.ndarray]
    problems: list[Problem]


def load_folder(path: Path, source: str, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read the images of a folder holding one sub-folder per class.

    Returns
    -------
    images : numpy.ndarray
        float32 ``(n, C, H, W)`` in ``[0, 1]``, class by class in contract
        order, files sorted by name.
    labels : numpy.ndarray
        int64 ``(n,)`` class indices.

    Raises
    ------
    ImageFileError
        Listing every problem of the folders and files; nothing is loaded.
    """
    entries = _visible(path)
    folders = {entry.name: entry for entry in entries if entry.is_dir()}
    problems = _layout_problems(entries, folders, source, spec)
    read = {
        name: _read_class_folder(folders[name], source, name, spec)
        for name in spec.classes
        if name in folders
    }
    problems += [problem for folder in read.values() for problem in folder.problems]
    raise_if_any(problems)
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
    problems = problems_if(
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


def _empty(spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    shape = (0, spec.channels, spec.height, spec.width)
    return np.zeros(shape, dtype=np.float32), np.zeros(0, dtype=np.int64)
