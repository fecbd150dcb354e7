"""Model registry: the shared networks, all Opacus-compatible (no BatchNorm).

Every builder takes the input width and the task's output width, so one name
serves every task of its data type.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from shared.config import ModelName

ModelBuilder = Callable[[int, int], nn.Module]

_MLP_HIDDEN = 32


def _logreg(n_features: int, output_dim: int) -> nn.Module:
    return nn.Linear(n_features, output_dim)


def _mlp(n_features: int, output_dim: int) -> nn.Module:
    # Tanh rather than ReLU: bounded activations keep per-sample gradients small,
    # which loses less signal to DP-SGD clipping (Papernot et al., AAAI 2021).
    return nn.Sequential(
        nn.Linear(n_features, _MLP_HIDDEN),
        nn.Tanh(),
        nn.Linear(_MLP_HIDDEN, output_dim),
    )


MODEL_BUILDERS: dict[ModelName, ModelBuilder] = {
    ModelName.LOGREG: _logreg,
    ModelName.MLP: _mlp,
}


def build_model(name: ModelName, *, n_features: int, output_dim: int, seed: int) -> nn.Module:
    """Build a freshly initialised model.

    Parameters
    ----------
    name : ModelName
        Registry name.
    n_features : int
        Input width.
    output_dim : int
        Output width (:attr:`shared.tasks.Task.output_dim`).
    seed : int
        Seed of the initial weights, so every party builds the same model.

    Returns
    -------
    nn.Module
        The model, on the CPU, in float32.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MODEL_BUILDERS[name](n_features, output_dim)
