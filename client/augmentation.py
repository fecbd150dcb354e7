"""Light image augmentation that leaves the DP-SGD accounting as it is.

Each example is transformed on its own, before its gradient is computed and
clipped, so one patient still moves one clipped gradient per step and the
sampling is untouched: the privacy analysis does not change. Only small shifts
are used; flips would swap left and right, which carries meaning in medical images.
"""

from __future__ import annotations

import torch
from torch.nn import functional

MAX_SHIFT_PIXELS = 2


def shift_images(images: torch.Tensor, max_shift: int = MAX_SHIFT_PIXELS) -> torch.Tensor:
    """Shift each image by its own random offset of up to ``max_shift`` pixels per axis.

    Parameters
    ----------
    images : torch.Tensor
        ``(n, channels, height, width)``.
    max_shift : int
        Largest shift, in pixels; borders are filled by repeating the edge.

    Returns
    -------
    torch.Tensor
        The shifted images, same shape.
    """
    count, channels, height, width = images.shape
    if count == 0 or max_shift == 0:
        return images
    padded = functional.pad(images, (max_shift,) * 4, mode="replicate")
    span = 2 * max_shift + 1
    down = torch.randint(0, span, (count,), device=images.device)
    right = torch.randint(0, span, (count,), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :] + down[:, None]
    cols = torch.arange(width, device=images.device)[None, :] + right[:, None]
    return padded[
        torch.arange(count, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
