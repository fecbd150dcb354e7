"""Model weights as named numpy arrays, checked on the way in, and safetensors files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from shared.errors import InvalidUpdateError


@dataclass(frozen=True)
class ModelLayout:
    """Names and shapes of a model's parameters, in ``state_dict`` order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ModelLayout:
        """Read the layout of ``model``."""
        state = model.state_dict()
        return cls(tuple(state), tuple(tuple(t.shape) for t in state.values()))

    def check(self, arrays: Sequence[np.ndarray], *, what: str) -> None:
        """Check ``arrays`` against this layout: count, shapes, all values finite.

        Raises
        ------
        InvalidUpdateError
            Naming ``what`` and the first offending parameter.
        """
        if len(arrays) != len(self.names):
            raise InvalidUpdateError(
                f"{what}: {len(arrays)} arrays for a model with {len(self.names)} parameters"
            )
        for name, shape, array in zip(self.names, self.shapes, arrays, strict=True):
            if tuple(array.shape) != shape:
                raise InvalidUpdateError(
                    f"{what}: parameter '{name}' has shape {tuple(array.shape)}, expected {shape}"
                )
            if not np.all(np.isfinite(array)):
                raise InvalidUpdateError(f"{what}: parameter '{name}' holds NaN or infinite values")

    def named(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Pair ``arrays`` with their parameter names."""
        return dict(zip(self.names, arrays, strict=True))


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Return the model's state as float32 arrays, in ``state_dict`` order."""
    return [
        t.detach().cpu().numpy().astype(np.float32, copy=True) for t in model.state_dict().values()
    ]


def set_weights(model: nn.Module, arrays: Sequence[np.ndarray], *, what: str) -> None:
    """Load ``arrays`` into ``model`` after checking them against its layout."""
    layout = ModelLayout.of(model)
    layout.check(arrays, what=what)
    model.load_state_dict(
        {name: torch.from_numpy(np.asarray(a)) for name, a in layout.named(arrays).items()}
    )


def save_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> None:
    """Write ``tensors`` to ``path`` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=dict(metadata)
    )
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file (no pickle involved)."""
    return load_file(str(path))


def load_matching_weights(model: nn.Module, path: Path) -> list[str]:
    """Copy into ``model`` every tensor of ``path`` whose name and shape match a parameter.

    This is how a trained autoencoder's ``encoder.*`` initialises the imaging
    classifier, whose encoder has the same names.

    Returns
    -------
    list[str]
        The parameter names loaded.

    Raises
    ------
    InvalidUpdateError
        If nothing in the file matches the model, or a matching tensor is not finite.
    """
    stored = load_safetensors(path)
    state = model.state_dict()
    matching = {
        name: stored[name]
        for name, tensor in state.items()
        if name in stored and tuple(stored[name].shape) == tuple(tensor.shape)
    }
    if not matching:
        raise InvalidUpdateError(
            f"{path}: no tensor matches the model's parameters by name and shape; "
            "is it a checkpoint of a model with the same encoder?"
        )
    for name, array in matching.items():
        if not np.all(np.isfinite(array)):
            raise InvalidUpdateError(f"{path}: tensor '{name}' holds NaN or infinite values")
    model.load_state_dict({name: torch.from_numpy(a) for name, a in matching.items()}, strict=False)
    return sorted(matching)
