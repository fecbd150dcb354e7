"""Image shifts: per-example, shape-preserving, content-preserving."""

import torch

from fedcare.client.augmentation import shift_images


def test_each_image_moves_by_at_most_the_bound_and_keeps_its_content() -> None:
    torch.manual_seed(0)
    images = torch.zeros(64, 1, 12, 12)
    images[:, 0, 6, 6] = 1.0
    shifted = shift_images(images, max_shift=2)
    assert shifted.shape == images.shape
    peaks = torch.stack([torch.nonzero(s[0] == 1.0)[0] for s in shifted])
    assert (peaks - 6).abs().max() <= 2
    # Different examples get different shifts (64 draws from 25 offsets).
    assert len({tuple(p.tolist()) for p in peaks}) > 5
    assert torch.all(shifted.sum(dim=(1, 2, 3)) == 1.0)


def test_no_shift_and_empty_batches_are_left_alone() -> None:
    images = torch.rand(3, 3, 8, 8)
    assert torch.equal(shift_images(images, max_shift=0), images)
    empty = torch.zeros(0, 1, 8, 8)
    assert shift_images(empty).shape == empty.shape
