"""fedcare's own networks, every one Opacus-compatible, at any width and depth.

DP-SGD needs per-sample gradients, so no network here mixes examples inside a
batch: GroupNorm instead of BatchNorm, and Opacus' DP layers (``DPGRU``,
``DPLSTM``, ``DPMultiheadAttention``) instead of torch's fused ones. Every
network takes one example's input shape, the task's output width and a
:class:`ModelSize`; the smallest size (width 1, depth 1) is fedcare's original
network, with the same parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from opacus.layers import DPMultiheadAttention
from torch import nn

_MLP_HIDDEN = 32
_CONV_WIDTHS = (16, 32)
_GROUPS = 4
_SEQUENCE_HIDDEN = 32
_ATTENTION_HEADS = 4
_POOLED_SIZE = 4
_EMBEDDING = 16


@dataclass(frozen=True)
class ModelSize:
    """How wide and deep one of fedcare's own networks is.

    Attributes
    ----------
    width : int
        Multiplier of every hidden width (channels, units, embedding sizes).
    depth : int
        Repeated units: hidden layers (MLP), convolutions per stage (CNN,
        autoencoder), residual blocks per stage (ResNet), stacked recurrent
        layers (GRU, LSTM), encoder blocks (Transformer).
    """

    width: int = 1
    depth: int = 1


def _flat_width(input_shape: tuple[int, ...]) -> int:
    return int(torch.Size(input_shape).numel())


def _flatten_first(input_shape: tuple[int, ...], layers: list[nn.Module]) -> nn.Module:
    # Table models keep their plain layer names; other inputs are flattened first.
    if len(input_shape) == 1 and len(layers) == 1:
        return layers[0]
    return nn.Sequential(nn.Flatten(), *layers) if len(input_shape) > 1 else nn.Sequential(*layers)


def logistic_regression(
    input_shape: tuple[int, ...], output_dim: int, size: ModelSize
) -> nn.Module:
    """One linear layer (the size does not apply)."""
    return _flatten_first(input_shape, [nn.Linear(_flat_width(input_shape), output_dim)])


def mlp(input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> nn.Module:
    """``size.depth`` hidden layers of ``32 * size.width`` units.

    Tanh rather than ReLU: bounded activations keep per-sample gradients small,
    which loses less signal to DP-SGD clipping (Papernot et al., AAAI 2021).
    """
    hidden = _MLP_HIDDEN * size.width
    layers: list[nn.Module] = []
    width_in = _flat_width(input_shape)
    for _ in range(size.depth):
        layers += [nn.Linear(width_in, hidden), nn.Tanh()]
        width_in = hidden
    return _flatten_first(input_shape, [*layers, nn.Linear(hidden, output_dim)])


def _conv_widths(size: ModelSize) -> tuple[int, int]:
    first, second = _CONV_WIDTHS
    return first * size.width, second * size.width


def conv_encoder(channels: int, size: ModelSize = ModelSize()) -> nn.Sequential:
    """Build the convolutional encoder shared by the CNN and the autoencoder.

    Both name it ``encoder``, so an autoencoder's trained encoder initialises the
    classifier (:func:`shared.serialization.load_matching_weights`). It halves
    the image twice. ReLU and max pooling: on images they learnt markedly faster
    under DP-SGD than Tanh or average pooling (measured on the synthetic films).
    """
    layers: list[nn.Module] = []
    width_in = channels
    for width in _conv_widths(size):
        for _ in range(size.depth):
            layers += [
                nn.Conv2d(width_in, width, kernel_size=3, padding=1),
                nn.GroupNorm(_GROUPS, width),
                nn.ReLU(),
            ]
            width_in = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ImageClassifier(nn.Module):
    """A small CNN: the shared encoder, pooled to a fixed size, then one linear layer."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> None:
        super().__init__()
        self.encoder = conv_encoder(input_shape[0], size)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(_POOLED_SIZE),
            nn.Flatten(),
            nn.Linear(_conv_widths(size)[-1] * _POOLED_SIZE**2, output_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` logits of ``n`` images."""
        output: torch.Tensor = self.head(self.encoder(images))
        return output


class ConvAutoencoder(nn.Module):
    """The shared encoder and a mirror decoder that redraws the image in [0, 1]."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> None:
        super().__init__()
        channels, height, width = input_shape
        first, second = _conv_widths(size)
        self.encoder = conv_encoder(channels, size)
        # Upsampling + convolution rather than transposed convolution: no
        # checkerboard artefacts, and the last upsampling restores odd sizes exactly.
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(second, first, kernel_size=3, padding=1),
            nn.Tanh(),
            nn.Upsample(size=(height, width)),
            nn.Conv2d(first, channels, kernel_size=3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the redrawn images."""
        output: torch.Tensor = self.decoder(self.encoder(images))
        return output


class _ResidualBlock(nn.Module):
    def __init__(self, in_width: int, out_width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_width, out_width, kernel_size=3, stride=stride, padding=1),
            nn.GroupNorm(_GROUPS, out_width),
            nn.Tanh(),
            nn.Conv2d(out_width, out_width, kernel_size=3, padding=1),
            nn.GroupNorm(_GROUPS, out_width),
        )
        self.shortcut = (
            nn.Identity()
            if in_width == out_width and stride == 1
            else nn.Conv2d(in_width, out_width, kernel_size=1, stride=stride)
        )
        self.activation = nn.Tanh()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.activation(self.body(images) + self.shortcut(images))
        return output


class ResNetGN(nn.Module):
    """A ResNet-style network with GroupNorm (BatchNorm would break per-sample privacy).

    Three stages (the last two halve the image) of ``size.depth`` residual blocks each.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> None:
        super().__init__()
        first, second = _conv_widths(size)
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], first, kernel_size=3, padding=1),
            nn.GroupNorm(_GROUPS, first),
            nn.Tanh(),
        )
        blocks: list[nn.Module] = []
        for in_width, out_width, stride in (
            (first, first, 1),
            (first, second, 2),
            (second, second, 2),
        ):
            blocks.append(_ResidualBlock(in_width, out_width, stride))
            blocks += [_ResidualBlock(out_width, out_width, 1) for _ in range(size.depth - 1)]
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(second, output_dim)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` logits of ``n`` images."""
        output: torch.Tensor = self.head(self.stages(self.stem(images)))
        return output


class RecurrentClassifier(nn.Module):
    """A GRU or LSTM over left-padded sequences, read out at the last (always real) step."""

    def __init__(
        self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize, *, cell: type
    ) -> None:
        super().__init__()
        hidden = _SEQUENCE_HIDDEN * size.width
        self.recurrent = cell(input_shape[-1], hidden, num_layers=size.depth, batch_first=True)
        self.head = nn.Linear(hidden, output_dim)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` logits of ``n`` sequences."""
        outputs, _ = self.recurrent(sequences)
        output: torch.Tensor = self.head(outputs[:, -1, :])
        return output


class _EncoderBlock(nn.Module):
    """Self-attention (Opacus' DP attention) and a feed-forward layer, each with a residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.attention = DPMultiheadAttention(width, _ATTENTION_HEADS, batch_first=True)
        self.norm_attention = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, width)
        )
        self.norm_feed_forward = nn.LayerNorm(width)

    def forward(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(
            hidden, hidden, hidden, key_padding_mask=padding, need_weights=False
        )
        hidden = self.norm_attention(hidden + attended)
        output: torch.Tensor = self.norm_feed_forward(hidden + self.feed_forward(hidden))
        return output


class SequenceTransformer(nn.Module):
    """``size.depth`` Transformer encoder blocks over sequences, mean-pooled over real steps.

    The input's last channel is the padding mask; padded steps are hidden from
    attention and from the pooling.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> None:
        super().__init__()
        steps, channels = input_shape
        width = _SEQUENCE_HIDDEN * size.width
        self.embed = nn.Linear(channels, width)
        # An embedding table, not a raw parameter: Opacus computes its per-sample gradients.
        self.position = nn.Embedding(steps, width)
        self.blocks = nn.ModuleList(_EncoderBlock(width) for _ in range(size.depth))
        self.head = nn.Linear(width, output_dim)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` logits of ``n`` sequences (last channel: the mask)."""
        real = sequences[:, :, -1] > 0
        batch, steps = sequences.shape[:2]
        # Positions carry the batch dimension so Opacus sees one lookup per example.
        positions = torch.arange(steps, device=sequences.device).expand(batch, steps)
        hidden = self.embed(sequences) + self.position(positions)
        for block in self.blocks:
            hidden = block(hidden, ~real)
        weights = real.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        output: torch.Tensor = self.head(pooled)
        return output


class NeuralCollaborativeFiltering(nn.Module):
    """Neural collaborative filtering (He et al., WWW 2017) over (patient, treatment) pairs.

    An MLP reads the element-wise product of the two embeddings (the
    matrix-factorisation term) beside the embeddings themselves and returns one
    response logit. The patient table is indexed by the hospital's own patient
    numbering and named ``local_patients``: it never leaves the hospital
    (:data:`shared.serialization.LOCAL_PREFIX`); the treatment embeddings and the
    MLP are federated.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> None:
        super().__init__()
        patients, treatments = input_shape
        embedding = _EMBEDDING * size.width
        hidden = _MLP_HIDDEN * size.width
        self.treatments = nn.Embedding(treatments, embedding)
        self.mlp = nn.Sequential(
            nn.Linear(3 * embedding, hidden), nn.Tanh(), nn.Linear(hidden, output_dim)
        )
        # Created last, so the shared layers' initial values do not depend on how
        # many patients a site has.
        self.local_patients = nn.Embedding(patients, embedding)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` response logits of ``(n, 2)`` (patient, treatment) pairs."""
        patient = self.local_patients(pairs[:, 0])
        treatment = self.treatments(pairs[:, 1])
        output: torch.Tensor = self.mlp(
            torch.cat([patient * treatment, patient, treatment], dim=-1)
        )
        return output
