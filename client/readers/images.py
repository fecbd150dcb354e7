"""A hospital's images: read a MedMNIST-style ``.npz`` file or a folder of class folders.

Images reach a hospital in one of two layouts, and :func:`load_image_file` picks
the reader from what the path is: a ``.npz`` archive
(:mod:`client.readers.image_npz`) or a folder holding one sub-folder per class
(:mod:`client.readers.image_folders`).

Images must already have the contract's size: they are never resized, because
resizing changes the very data the contract describes, and a silent resize at
one hospital would make its images differ from everyone else's.

Every problem found is collected and all are raised together in one
:class:`client.readers.image_problems.ImageFileError`; the counts of images come
only once every image could be read. A message never carries a pixel value, a
file name or the name of an unexpected folder (:mod:`client.readers.image_problems`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcare.client.readers.image_folders import load_folder
from fedcare.client.readers.image_npz import load_npz
from fedcare.client.readers.image_problems import Problem, Rule, count_of, fail, raise_if_any
from fedcare.shared.contract import DataContract, ImageSpec
from fedcare.shared.data import Examples, InputKind


def read_images(path: Path, contract: DataContract) -> Examples:
    """Read a hospital's images and hold them to an images contract.

    Parameters
    ----------
    path : Path
        A MedMNIST-style ``.npz`` file, or a folder with one sub-folder per class.
    contract : DataContract
        The federation's contract, of format ``images``.

    Returns
    -------
    examples : Examples
        The images (:func:`load_image_file`) with the labels the contract's task
        trains on (:meth:`shared.contract.DataContract.labels_from_indices`).

    Raises
    ------
    ImageFileError
        Listing every problem found.
    ContractError
        If the contract does not describe images.
    """
    images, classes = load_image_file(path, contract.image_spec())
    labels = contract.labels_from_indices(classes)
    return Examples(images, labels, contract.feature_names(), InputKind.IMAGES)


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
            raise fail(source, Rule.NOT_FOUND, "no such file or folder; check the data path")
        if path.is_dir():
            images, labels = load_folder(path, source, spec)
        elif path.suffix.lower() == ".npz":
            images, labels = load_npz(path, source, spec)
        else:
            raise fail(
                source,
                Rule.UNSUPPORTED_FORMAT,
                f"fedcare reads images from a MedMNIST-style .npz file or from a folder with "
                f"one sub-folder per class, not from a '{path.suffix}' file",
            )
    except PermissionError:
        raise fail(
            source, Rule.UNREADABLE, "permission denied; let fedcare's user read it"
        ) from None
    raise_if_any(_count_problems(labels, spec, source, "folder" if path.is_dir() else "file"))
    return images, labels


def _count_problems(labels: np.ndarray, spec: ImageSpec, source: str, where: str) -> list[Problem]:
    problems = []
    if len(labels) < spec.min_images:
        problems.append(
            Problem(
                source,
                where,
                Rule.TOO_FEW_IMAGES,
                None,
                f"{count_of(len(labels), 'image')} in all; the contract needs at least "
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
            f"class '{name}' has {count_of(int(count), 'image')}; the contract needs at least "
            f"{spec.min_images_per_class} of every class",
        )
        for name, count in zip(spec.classes, counts, strict=True)
        if count < spec.min_images_per_class
    ]
    return problems
