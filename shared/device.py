"""Choosing where a model trains: the GPU when one is present, else the CPU."""

from __future__ import annotations

import torch

from fedcare.shared.config.training import DeviceName


def resolve_device(name: DeviceName) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` to a device; ``auto`` takes CUDA when present.

    Raises
    ------
    RuntimeError
        If ``cuda`` is asked for on a machine without a usable GPU.
    """
    if name is DeviceName.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name is DeviceName.CUDA and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was asked for, but torch sees no GPU here; install a CUDA build "
            "of torch or set device to 'auto' or 'cpu'"
        )
    return torch.device(name.value)
