"""Model weights as named numpy arrays, checked on the way in, and safetensors files.

A parameter whose name (or a parent module's name) starts with
:data:`LOCAL_PREFIX` belongs to one hospital, such as its patients' embeddings:
the layout, :func:`get_weights` and :func:`set_weights` leave it out, so no
update, aggregate or checkpoint ever holds it. The hospital keeps it with
:func:`get_local_weights` and :func:`set_local_weights`. Frozen parameters (a
pretrained backbone) are left out the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save
from torch import nn

from fedcare.shared.errors import InvalidUpdateError

LOCAL_PREFIX = "local_"
"""Start of the name of a parameter that never leaves the site it was trained at."""


def is_local(name: str) -> bool:
    """Whether parameter ``name`` (a dotted ``state_dict`` key) is site-local."""
    return any(part.startswith(LOCAL_PREFIX) for part in name.split("."))


def shared_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the model's ``state_dict`` without its site-local and frozen parameters.

    A frozen parameter (``requires_grad`` off: a pretrained backbone under
    ``fine-tune = "head"`` or ``"lora"``) never changes, and every party loads it
    from its own copy of the pretrained file, so it never travels either.
    """
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {
        name: t
        for name, t in model.state_dict().items()
        if not is_local(name) and name not in frozen
    }


def _local_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t for name, t in model.state_dict().items() if is_local(name)}


@dataclass(frozen=True)
class ModelLayout:
    """Names and shapes of a model's shared (not site-local) parameters, in ``state_dict`` order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ModelLayout:
        """Read the layout of ``model``."""
        state = shared_state(model)
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


def _arrays(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {
        name: t.detach().cpu().numpy().astype(np.float32, copy=True) for name, t in tensors.items()
    }


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Return the model's shared state as float32 arrays, in ``state_dict`` order."""
    return list(_arrays(shared_state(model)).values())


def set_weights(model: nn.Module, arrays: Sequence[np.ndarray], *, what: str) -> None:
    """Load ``arrays`` into the model's shared parameters after checking them against its layout.

    Site-local parameters keep their values.
    """
    layout = ModelLayout.of(model)
    layout.check(arrays, what=what)
    model.load_state_dict(
        {name: torch.from_numpy(np.asarray(a)) for name, a in layout.named(arrays).items()},
        strict=False,
    )


def get_local_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """Return the model's site-local parameters as float32 arrays, by name."""
    return _arrays(_local_state(model))


def set_local_weights(model: nn.Module, tensors: Mapping[str, np.ndarray], *, what: str) -> None:
    """Load every site-local parameter of ``model`` from ``tensors``.

    Raises
    ------
    InvalidUpdateError
        Naming ``what`` if the names, shapes or values do not fit the model.
    """
    state = _local_state(model)
    if set(tensors) != set(state):
        raise InvalidUpdateError(
            f"{what}: holds {sorted(tensors)}, but the model's site-local parameters are "
            f"{sorted(state)}"
        )
    layout = ModelLayout(tuple(state), tuple(tuple(t.shape) for t in state.values()))
    layout.check([tensors[name] for name in layout.names], what=what)
    model.load_state_dict(
        {name: torch.from_numpy(np.asarray(a)) for name, a in tensors.items()}, strict=False
    )


def save_safetensors(
    path: Path,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    *,
    mode: int = 0o666,
) -> None:
    """Write ``tensors`` to ``path`` atomically (temp file, fsync, rename).

    The file is created with permissions ``mode`` (less the umask): ``0o600``
    keeps a file derived from patient data readable by its owner only, from
    the first byte written.
    """
    tmp = path.with_name(path.name + ".tmp")
    content = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, dict(metadata))
    # A stale temp file would keep its old permissions; O_EXCL creates it afresh.
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
        handle.write(content)
        handle.flush()
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
    state = shared_state(model)
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
