"""Example fedcare model plugin: two networks registered under ``fedcare.models``."""

from __future__ import annotations

import math

import torch
from torch import nn

_HIDDEN = 64
_BLOCKS = 2


class _ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Add the block's transformation to its input."""
        return hidden + self.activation(self.linear(self.norm(hidden)))


class ResidualMLP(nn.Module):
    """A residual MLP: an input projection, LayerNorm residual blocks, a linear head."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(math.prod(input_shape), _HIDDEN)
        self.blocks = nn.Sequential(*(_ResidualBlock(_HIDDEN) for _ in range(_BLOCKS)))
        self.head = nn.Linear(_HIDDEN, output_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` logits of ``n`` flattened inputs."""
        return self.head(self.blocks(self.project(features.flatten(start_dim=1))))


def residual_mlp(input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    """Build a residual MLP for inputs of ``input_shape`` (flattened) and ``output_dim`` logits."""
    return ResidualMLP(input_shape, output_dim)


def small_vgg_bn(input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    """Build a small VGG-style CNN with BatchNorm for ``(channels, height, width)`` images."""
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, output_dim),
    )
