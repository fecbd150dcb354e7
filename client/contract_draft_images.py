"""Draft an images contract from a hospital's ``.npz`` file or folder of class folders.

What can be inferred: the images' channels, height and width, and the classes
(the class folders' names, or ``"0"``, ``"1"``, ... for a ``.npz`` file's label
indices). Like every draft, it is written only once the images meet it
(:func:`client.contract_draft.render_draft`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedcare.client.readers.image_folders import IMAGE_SUFFIXES
from fedcare.shared.contract.images import IMAGE_CHANNEL_NAMES
from fedcare.shared.errors import DataError

MIN_IMAGES, MIN_IMAGES_PER_CLASS = 20, 5
"""The minimum counts a draft proposes (lowered to what the images themselves hold)."""

_SPLITS = ("train", "val", "test")


def draft_images(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Return the contract fields the images at ``path`` show, and notes for the reviewer.

    Raises
    ------
    DataError
        If the images cannot be read or their layout not inferred, naming the path.
    """
    if path.is_dir():
        classes, counts, (channels, height, width) = _folder(path)
    elif path.is_file():
        classes, counts, (channels, height, width) = _npz(path)
    else:
        raise DataError(f"{path}: no such file or folder")
    if len(classes) < 2:
        raise DataError(
            f"{path}: the images hold {len(classes)} class(es); a contract lists every class "
            "the federation's hospitals hold: write the classes by hand"
        )
    contract: dict[str, Any] = {
        "task": "binary" if len(classes) == 2 else "multiclass",
        "classes": classes,
    }
    notes = [f"classes: {len(classes)}, from the {'folders' if path.is_dir() else 'labels'}"]
    if len(classes) == 2:
        contract["positive_class"] = classes[1]
        notes.append(f"positive class is '{classes[1]}'; check it")
    contract["min_rows"] = min(MIN_IMAGES, int(sum(counts)))
    contract["min_rows_per_class"] = max(1, min(MIN_IMAGES_PER_CLASS, int(min(counts))))
    contract["images"] = {"channels": channels, "height": height, "width": width}
    return contract, notes


def _folder(path: Path) -> tuple[list[str], list[int], tuple[int, int, int]]:
    folders = sorted(
        entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    files = {folder.name: _image_files(folder) for folder in folders}
    sample = next((names[0] for names in files.values() if names), None)
    if sample is None:
        raise DataError(f"{path}: no .png, .jpg or .jpeg image in any class folder")
    try:
        with Image.open(sample) as image:
            width, height = image.size
            channels = 3 if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr") else 1
    except (OSError, UnidentifiedImageError):
        raise DataError(f"{path}: an image in a class folder cannot be read") from None
    return list(files), [len(names) for names in files.values()], (channels, height, width)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES
    )


def _npz(path: Path) -> tuple[list[str], list[int], tuple[int, int, int]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "train_images" not in archive.files or "train_labels" not in archive.files:
                raise DataError(f"{path}: holds no train_images and train_labels arrays")
            shape = archive["train_images"].shape
            labels = np.concatenate(
                [
                    archive[f"{split}_labels"].reshape(-1)
                    for split in _SPLITS
                    if f"{split}_labels" in archive.files
                ]
            )
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DataError(f"{path}: not a readable .npz file (a MedMNIST-style archive)") from None
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{path}: labels must be class indices 0, 1, 2, ...")
    counts = np.bincount(labels)
    return [str(index) for index in range(len(counts))], counts.tolist(), _layout(path, shape)


def _layout(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return (channels, height, width) of ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)``."""
    if len(shape) == 3:
        return 1, shape[1], shape[2]
    if len(shape) == 4 and shape[-1] in IMAGE_CHANNEL_NAMES:
        return shape[-1], shape[1], shape[2]
    if len(shape) == 4 and shape[1] in IMAGE_CHANNEL_NAMES:
        return shape[1], shape[2], shape[3]
    raise DataError(
        f"{path}: train_images has shape {shape}; images must be (n, H, W), (n, H, W, C) or "
        "(n, C, H, W) with 1 or 3 channels"
    )
