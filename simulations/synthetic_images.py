"""Seeded synthetic scans with real structure, for tests and demos.

Federated-learning code cannot be tested on patient data, and simulations here
may download nothing. Random noise would let a broken training loop look fine,
so :func:`make_images` plants a signal that a working model must find and a
broken one will miss: grey or tinted scans whose class is a finding (nodule,
streaky opacities, ring, several nodules, effusion) at a jittered position,
size and brightness on a smooth, noisy background.

Every output is a deterministic function of the ``seed`` argument. Synthetic
patient tables (vitals, treatments) are in :mod:`simulations.synthetic_patients`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_IMAGE_CLASSES = 6
MIN_IMAGE_SIZE = 16
# Coarse grid of the background texture: few nodes keep it smooth at any image size.
TEXTURE_NODES = 5
IMAGE_NOISE_SD = 0.05
# Slightly warm tint for three-channel images, as photographed slides or dermoscopy have.
RGB_TINT = (1.0, 0.93, 0.86)

ShapeDrawer = Callable[[np.random.Generator, int, np.ndarray, np.ndarray], np.ndarray]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] as (1, size, 1) rows and (1, 1, size) columns."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    return axis[None, :, None], axis[None, None, :]


def _uniform(rng: np.random.Generator, low: float, high: float, m: int) -> np.ndarray:
    """Draw ``m`` per-image parameters shaped to broadcast against (m, size, size)."""
    return rng.uniform(low, high, m).astype(np.float32)[:, None, None]


def _blob(
    y: np.ndarray, x: np.ndarray, cy: np.ndarray, cx: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """Gaussian spot, as solid lesions look at low resolution."""
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def _nodule(rng: np.random.Generator, m: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One bright round blob at a random central position."""
    cy, cx = _uniform(rng, 0.3, 0.7, m), _uniform(rng, 0.3, 0.7, m)
    return _uniform(rng, 0.5, 0.8, m) * _blob(y, x, cy, cx, _uniform(rng, 0.07, 0.12, m))


def _streaks(rng: np.random.Generator, m: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Thin parallel linear opacities at a random angle, confined to one region."""
    angle = _uniform(rng, 0.0, np.pi, m)
    across = (x - 0.5) * np.sin(angle) - (y - 0.5) * np.cos(angle)
    period = _uniform(rng, 0.14, 0.22, m)
    lines = (0.5 + 0.5 * np.cos(2 * np.pi * across / period + _uniform(rng, 0, 2 * np.pi, m))) ** 4
    cy, cx = _uniform(rng, 0.35, 0.65, m), _uniform(rng, 0.35, 0.65, m)
    region = _blob(y, x, cy, cx, _uniform(rng, 0.2, 0.28, m))
    return _uniform(rng, 0.45, 0.65, m) * lines * region


def _ring(rng: np.random.Generator, m: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bright annulus around a dark centre, like a cavitating lesion."""
    cy, cx = _uniform(rng, 0.35, 0.65, m), _uniform(rng, 0.35, 0.65, m)
    radius = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    offset = radius - _uniform(rng, 0.12, 0.2, m)
    width = _uniform(rng, 0.03, 0.05, m)
    return _uniform(rng, 0.45, 0.7, m) * np.exp(-(offset**2) / (2 * width**2))


def _two_nodules(rng: np.random.Generator, m: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Two smaller blobs a random distance apart, like metastases."""
    cy, cx = _uniform(rng, 0.3, 0.7, m), _uniform(rng, 0.3, 0.7, m)
    angle, gap = _uniform(rng, 0.0, 2 * np.pi, m), _uniform(rng, 0.25, 0.4, m)
    cy2 = np.clip(cy + gap * np.sin(angle), 0.15, 0.85)
    cx2 = np.clip(cx + gap * np.cos(angle), 0.15, 0.85)
    sigma = _uniform(rng, 0.045, 0.07, m)
    spots = _blob(y, x, cy, cx, sigma) + _blob(y, x, cy2, cx2, sigma)
    return _uniform(rng, 0.45, 0.7, m) * spots


def _effusion(rng: np.random.Generator, m: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Opacity filling the lower image with a meniscus rising at the sides."""
    level = _uniform(rng, 0.6, 0.78, m) - _uniform(rng, 0.3, 0.8, m) * (x - 0.5) ** 2
    softness = _uniform(rng, 0.02, 0.04, m)
    return _uniform(rng, 0.3, 0.5, m) / (1 + np.exp(-(y - level) / softness))


# Class 0 ("normal") has no finding; class k > 0 draws _FINDINGS[k - 1].
_FINDINGS: tuple[ShapeDrawer, ...] = (_nodule, _streaks, _ring, _two_nodules, _effusion)


def _interpolation_matrix(size: int, nodes: int) -> np.ndarray:
    """Linear-interpolation weights (size, nodes) from a coarse grid onto the pixel grid."""
    position = np.linspace(0, nodes - 1, size)
    left = np.minimum(position.astype(int), nodes - 2)
    frac = position - left
    weights = np.zeros((size, nodes), dtype=np.float32)
    weights[np.arange(size), left] = 1 - frac
    weights[np.arange(size), left + 1] = frac
    return weights


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Smooth tissue-like texture: a coarse random field upsampled, darker at the edges."""
    coarse = rng.normal(0.0, 0.07, (n, TEXTURE_NODES, TEXTURE_NODES)).astype(np.float32)
    weights = _interpolation_matrix(size, TEXTURE_NODES)
    # optimize=False keeps einsum off BLAS: BLAS thread pools have hung when called from
    # the simulation's server thread in a process that also runs Ray and torch.
    texture = np.einsum("ij,njk,lk->nil", weights, coarse, weights, optimize=False)
    y, x = _grid(size)
    vignette = 1 - 0.35 * ((y - 0.5) ** 2 + (x - 0.5) ** 2) / 0.5
    return _uniform(rng, 0.18, 0.3, n) * vignette + texture


def _findings(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Draw each image's class-specific finding; one class at a time keeps it vectorised."""
    y, x = _grid(size)
    finding = np.zeros((len(labels), size, size), dtype=np.float32)
    for label, draw in enumerate(_FINDINGS, start=1):
        rows = np.flatnonzero(labels == label)
        if rows.size:
            finding[rows] = draw(rng, rows.size, y, x)
    return finding


def _channel_gains(rng: np.random.Generator, n: int, channels: int) -> np.ndarray:
    """Per-image, per-channel gains (n, channels, 1, 1): a jittered tint for colour images."""
    if channels != 3:
        return np.ones((1, channels, 1, 1), dtype=np.float32)
    jitter = rng.normal(1.0, 0.03, (n, channels)).astype(np.float32)
    return (np.asarray(RGB_TINT, dtype=np.float32) * jitter)[:, :, None, None]


def _check_images(n: int, num_classes: int, channels: int, size: int) -> None:
    """Reject arguments :func:`make_images` cannot honour."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 2 <= num_classes <= MAX_IMAGE_CLASSES:
        raise ValueError(f"num_classes must be in 2..{MAX_IMAGE_CLASSES}, got {num_classes}")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"size must be at least {MIN_IMAGE_SIZE}, got {size}")


def make_images(
    n: int, *, num_classes: int = 3, channels: int = 1, size: int = 28, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw labelled scans whose class is a visible finding.

    Class 0 is normal (background texture only); 1 a nodule; 2 streaky linear
    opacities; 3 a ring; 4 two nodules; 5 a lower-zone effusion. Position, size
    and brightness of each finding, the background and the overall gain are
    jittered and Gaussian noise is added, so the task is easy for a small CNN
    but not trivial.

    Parameters
    ----------
    n : int
        Number of images.
    num_classes : int
        Number of classes, 2 to 6; the first ``num_classes`` of the list above.
    channels : int
        Channels per image; with 3 the channels carry a slightly jittered tint.
    size : int
        Height and width in pixels, at least 16.
    seed : int
        Seed of every random draw.

    Returns
    -------
    images : np.ndarray
        float32 array (n, channels, size, size) with values in [0, 1].
    labels : np.ndarray
        int64 array (n,) in ``0 .. num_classes - 1``, balanced to within one image.

    Raises
    ------
    ValueError
        If an argument is outside the range given above.
    """
    _check_images(n, num_classes, channels, size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    scene = _background(rng, n, size) + _findings(rng, labels, size)
    scene *= _uniform(rng, 0.9, 1.1, n)
    images = scene[:, None] * _channel_gains(rng, n, channels)
    images += IMAGE_NOISE_SD * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images, 0.0, 1.0, out=images), labels
