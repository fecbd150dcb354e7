"""Hospital images (client.readers.images): MedMNIST-style .npz files and class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedcare.client.readers.image_problems import ImageFileError, Rule
from fedcare.client.readers.images import load_image_file
from fedcare.shared.contract import ImageSpec
from tests.contracts import IMAGE_CLASSES as CLASSES
from tests.contracts import IMAGE_HEIGHT as H
from tests.contracts import IMAGE_WIDTH as W
from tests.contracts import image_spec as _spec

CANARY_VALUE = 987654.321
CANARY_ID = "CANARY-ID"
CANARY_TEXTS = ("987654", "CANARY")


def _uint8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _npz(tmp_path: Path, name: str = "scans.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)  # type: ignore[arg-type]  # a key could be allow_pickle
    return path


def _error(path: Path, spec: ImageSpec | None = None) -> ImageFileError:
    with pytest.raises(ImageFileError) as caught:
        load_image_file(path, spec or _spec())
    return caught.value


def _rules(error: ImageFileError) -> set[Rule]:
    return {problem.rule for problem in error.problems}


def _assert_private(message: str) -> None:
    for secret in CANARY_TEXTS:
        assert secret not in message


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _class_folders(root: Path, per_class: int = 2, mode: str = "L") -> Path:
    """Write ``per_class`` images per class; pixel values encode class and file number."""
    for index, name in enumerate(CLASSES):
        for number in range(per_class):
            value = 40 * index + number
            shape = (H, W) if mode == "L" else (H, W, 3)
            _png(root / name / f"scan_{number}.png", np.full(shape, value, dtype=np.uint8))
    return root


# --- .npz files that load


def test_npz_grayscale_uint8_appends_every_split(tmp_path: Path) -> None:
    train, val, test = _uint8((5, H, W), 1), _uint8((2, H, W), 2), _uint8((3, H, W), 3)
    path = _npz(
        tmp_path,
        train_images=train,
        train_labels=np.array([0, 1, 2, 0, 1], dtype=np.uint8).reshape(-1, 1),
        val_images=val,
        val_labels=np.array([2, 2]),
        test_images=test,
        test_labels=np.array([[1], [0], [2]]),
    )
    images, labels = load_image_file(path, _spec())
    assert images.shape == (10, 1, H, W)
    assert images.dtype == np.float32
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 2, 1, 0, 2]
    expected = np.concatenate([train, val, test])[:, np.newaxis] / 255.0
    np.testing.assert_allclose(images, expected, rtol=1e-6)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_npz_rgb_channels_last(tmp_path: Path) -> None:
    pixels = _uint8((4, H, W, 3))
    path = _npz(tmp_path, train_images=pixels, train_labels=np.array([0, 1, 2, 1]))
    images, _ = load_image_file(path, _spec(channels=3))
    assert images.shape == (4, 3, H, W)
    np.testing.assert_allclose(images[2, 1], pixels[2, :, :, 1] / 255.0, rtol=1e-6)


def test_npz_float_channels_first(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).random((4, 3, H, W))
    path = _npz(tmp_path, train_images=pixels, train_labels=np.array([0, 1, 2, 1]))
    images, _ = load_image_file(path, _spec(channels=3))
    assert images.shape == (4, 3, H, W)
    assert images.dtype == np.float32
    np.testing.assert_allclose(images, pixels, rtol=1e-6)


def test_npz_grayscale_with_a_channel_axis(tmp_path: Path) -> None:
    path = _npz(tmp_path, train_images=_uint8((3, H, W, 1)), train_labels=np.array([0, 1, 2]))
    images, _ = load_image_file(path, _spec())
    assert images.shape == (3, 1, H, W)


# --- .npz files that do not


def test_missing_path_and_unsupported_format(tmp_path: Path) -> None:
    assert _rules(_error(tmp_path / "scans.npz")) == {Rule.NOT_FOUND}
    tiff = tmp_path / "scans.tiff"
    tiff.write_bytes(b"II*\x00")
    error = _error(tiff)
    assert _rules(error) == {Rule.UNSUPPORTED_FORMAT}
    assert "'.tiff'" in str(error)


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "scans.npz"
    path.write_bytes(b"definitely not a zip archive")
    error = _error(path)
    assert _rules(error) == {Rule.MALFORMED}
    assert "scans.npz" in str(error)


def test_npz_missing_arrays(tmp_path: Path) -> None:
    path = _npz(
        tmp_path, train_images=_uint8((3, H, W)), val_images=_uint8((1, H, W)), extra=np.zeros(1)
    )
    message = str(_error(path))
    assert "array 'train_labels': missing-array" in message
    assert "array 'val_labels': missing-array" in message


def test_npz_pickled_array_is_never_unpickled(tmp_path: Path) -> None:
    labels = np.array([CANARY_ID, 1, 2], dtype=object)
    path = _npz(tmp_path, train_images=_uint8((3, H, W)), train_labels=labels)
    error = _error(path)
    message = str(error)
    assert _rules(error) == {Rule.UNREADABLE_ARRAY}
    assert "array 'train_labels'" in message and "unpickle" in message
    _assert_private(message)


def test_npz_wrong_size_names_both_sizes(tmp_path: Path) -> None:
    path = _npz(tmp_path, train_images=_uint8((3, 28, 28)), train_labels=np.array([0, 1, 2]))
    message = str(_error(path))
    assert "array 'train_images': wrong-size" in message
    assert "28x28" in message and f"{H}x{W}" in message and "never resizes" in message


def test_npz_wrong_channels(tmp_path: Path) -> None:
    path = _npz(tmp_path, train_images=_uint8((3, H, W, 3)), train_labels=np.array([0, 1, 2]))
    error = _error(path)
    assert _rules(error) == {Rule.WRONG_CHANNELS}
    assert "3 channels" in str(error) and "grayscale" in str(error)


def test_npz_wrong_dimensions_and_dtypes(tmp_path: Path) -> None:
    path = _npz(
        tmp_path,
        train_images=_uint8((3, H, W, 1, 1)),
        train_labels=np.array([0.0, 1.0, 2.0]),
        val_images=_uint8((2, H, W)).astype(np.uint16),
        val_labels=np.zeros((2, 3), dtype=np.int64),
    )
    message = str(_error(path))
    assert "array 'train_images': wrong-shape" in message and "5 dimensions" in message
    assert "array 'train_labels': wrong-dtype" in message and "float64" in message
    assert "array 'val_images': wrong-dtype" in message and "uint16" in message
    assert "array 'val_labels': wrong-shape" in message and "multi-label" in message


def test_npz_float_values_out_of_range_and_not_finite(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).random((5, H, W))
    pixels[0, 0, 0] = CANARY_VALUE
    pixels[1, 3, 3] = -CANARY_VALUE
    pixels[2, 1, 1] = np.nan
    pixels[3, 2, 2] = np.inf
    path = _npz(tmp_path, train_images=pixels, train_labels=np.array([0, 1, 2, 0, 1]))
    error = _error(path)
    message = str(error)
    assert "array 'train_images': out-of-range in 2 images" in message
    assert "array 'train_images': not-finite in 2 images" in message
    assert "divide by 255" in message
    _assert_private(message)


def test_npz_label_out_of_range_and_length_mismatch(tmp_path: Path) -> None:
    labels = np.array([0, 98765, -1, 2])
    path = _npz(tmp_path, train_images=_uint8((3, H, W)), train_labels=labels)
    error = _error(path)
    message = str(error)
    assert "array 'train_labels': label-out-of-range in 2 images" in message
    assert "0 = benign, 1 = malignant, 2 = normal" in message
    assert "array 'train_labels': length-mismatch" in message
    assert "4 labels for 3 images" in message
    assert "98765" not in message


def test_too_few_images_and_too_few_of_a_class(tmp_path: Path) -> None:
    path = _npz(tmp_path, train_images=_uint8((3, H, W)), train_labels=np.array([0, 0, 1]))
    error = _error(path, _spec(min_images=5, min_images_per_class=1))
    message = str(error)
    assert _rules(error) == {Rule.TOO_FEW_IMAGES, Rule.TOO_FEW_IMAGES_IN_CLASS}
    assert "3 images in all; the contract needs at least 5" in message
    assert "class 'normal' has 0 images" in message
    assert "class 'benign'" not in message


# --- class folders that load


def test_folder_of_grayscale_pngs(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans")
    (root / ".DS_Store").write_bytes(b"finder")  # hidden entries are skipped
    images, labels = load_image_file(root, _spec())
    assert images.shape == (6, 1, H, W)
    assert images.dtype == np.float32
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(images[:, 0, 0, 0] * 255.0, [0, 1, 40, 41, 80, 81], atol=1e-4)


def test_folder_converts_to_rgb_and_reads_jpeg(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans", per_class=1)
    Image.fromarray(np.full((H, W, 3), 200, dtype=np.uint8)).save(root / "normal" / "x.JPEG")
    images, labels = load_image_file(root, _spec(channels=3))
    assert images.shape == (4, 3, H, W)
    assert labels.tolist() == [0, 1, 2, 2]
    np.testing.assert_allclose(images[1, :, 0, 0] * 255.0, [40, 40, 40], atol=1e-4)
    np.testing.assert_allclose(images[3] * 255.0, 200.0, atol=2.0)  # JPEG is lossy


def test_rgb_png_becomes_grayscale(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans", per_class=1, mode="RGB")
    images, _ = load_image_file(root, _spec())
    assert images.shape == (3, 1, H, W)


# --- class folders that do not load


def test_unknown_and_missing_class_folders_and_loose_files(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans")
    (root / "normal" / "scan_0.png").rename(root / f"{CANARY_ID}.png")
    for path in (root / "normal").iterdir():
        path.unlink()
    (root / "normal").rmdir()
    (root / CANARY_ID).mkdir()
    error = _error(root)
    message = str(error)
    assert _rules(error) == {Rule.MISSING_CLASS_FOLDER, Rule.UNKNOWN_FOLDER, Rule.LOOSE_FILE}
    assert "class folder 'normal': missing-class-folder" in message
    assert "folder: unknown-folder in 1 folder" in message
    assert "folder: loose-file in 1 file" in message
    assert "(benign, malignant, normal)" in message
    _assert_private(message)


def test_wrong_size_files_are_counted_not_named(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans")
    _png(root / "benign" / f"{CANARY_ID}.png", np.zeros((28, 28), dtype=np.uint8))
    _png(root / "benign" / f"{CANARY_ID}-2.png", np.zeros((28, 30), dtype=np.uint8))
    error = _error(root)
    message = str(error)
    assert "class folder 'benign': wrong-size in 2 files" in message
    assert "28x28, 28x30" in message and f"must be {H}x{W}" in message
    _assert_private(message)


def test_unreadable_deep_and_non_image_files(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans")
    (root / "malignant" / f"{CANARY_ID}.png").write_bytes(b"not a png at all")
    (root / "malignant" / f"{CANARY_ID}.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "malignant" / "notes.txt").write_text(CANARY_ID)
    (root / "malignant" / "nested").mkdir()
    deep = Image.fromarray(np.full((H, W), 40000, dtype=np.uint16))
    deep.save(root / "normal" / f"{CANARY_ID}.png")
    error = _error(root)
    message = str(error)
    assert "class folder 'malignant': unreadable-image in 2 files" in message
    assert "class folder 'malignant': not-an-image-file in 2 files" in message
    assert "class folder 'normal': unsupported-depth in 1 file" in message
    _assert_private(message)


def test_folder_counts(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "scans", per_class=1)
    for path in (root / "normal").iterdir():
        path.unlink()
    error = _error(root, _spec(min_images=4, min_images_per_class=1))
    message = str(error)
    assert f"{root}: folder: too-few-images" in message
    assert "class 'normal' has 0 images" in message


def test_empty_folder_with_no_minimum_per_class(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    error = _error(root)
    assert _rules(error) == {Rule.TOO_FEW_IMAGES}
    assert "0 images in all" in str(error)
