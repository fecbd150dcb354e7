"""Model registry: the shared networks, every one Opacus-compatible.

DP-SGD needs per-sample gradients, so no network here mixes examples inside a
batch: GroupNorm instead of BatchNorm, and Opacus' DP layers (``DPGRU``,
``DPLSTM``, ``DPMultiheadAttention``) instead of torch's fused ones. Every
builder takes one example's input shape and the task's output width, so one
name serves every task of its input kind (for interactions the "shape" is the
number of patients and of treatments, :attr:`shared.data.Examples.input_shape`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from opacus.layers import DPGRU, DPLSTM, DPMultiheadAttention
from torch import nn

from fedcare.shared.config import ModelName
from fedcare.shared.data import InputKind
from fedcare.shared.errors import ConfigError
from fedcare.shared.tasks import Task, TaskKind

ModelBuilder = Callable[[tuple[int, ...], int], nn.Module]

_MLP_HIDDEN = 32
_CONV_WIDTHS = (16, 32)
_GROUPS = 4
_SEQUENCE_HIDDEN = 32
_ATTENTION_HEADS = 4
_POOLED_SIZE = 4
_EMBEDDING = 16


def _flat_width(input_shape: tuple[int, ...]) -> int:
    return int(torch.Size(input_shape).numel())


def _flatten_first(input_shape: tuple[int, ...], layers: list[nn.Module]) -> nn.Module:
    # Table models keep their plain layer names; other inputs are flattened first.
    if len(input_shape) == 1 and len(layers) == 1:
        return layers[0]
    return nn.Sequential(nn.Flatten(), *layers) if len(input_shape) > 1 else nn.Sequential(*layers)


def _logreg(input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    return _flatten_first(input_shape, [nn.Linear(_flat_width(input_shape), output_dim)])


def _mlp(input_shape: tuple[int, ...], output_dim: int) -> nn.Module:
    # Tanh rather than ReLU: bounded activations keep per-sample gradients small,
    # which loses less signal to DP-SGD clipping (Papernot et al., AAAI 2021).
    return _flatten_first(
        input_shape,
        [
            nn.Linear(_flat_width(input_shape), _MLP_HIDDEN),
            nn.Tanh(),
            nn.Linear(_MLP_HIDDEN, output_dim),
        ],
    )


def conv_encoder(channels: int) -> nn.Sequential:
    """The convolutional encoder shared by the CNN and the autoencoder.

    Both name it ``encoder``, so an autoencoder's trained encoder initialises the
    classifier (:func:`shared.serialization.load_matching_weights`). It halves
    the image twice. ReLU and max pooling: on images they learnt markedly faster
    under DP-SGD than Tanh or average pooling (measured on the synthetic films).
    """
    first, second = _CONV_WIDTHS
    return nn.Sequential(
        nn.Conv2d(channels, first, kernel_size=3, padding=1),
        nn.GroupNorm(_GROUPS, first),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, kernel_size=3, padding=1),
        nn.GroupNorm(_GROUPS, second),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class ImageClassifier(nn.Module):
    """A small CNN: the shared encoder, pooled to a fixed size, then one linear layer."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        self.encoder = conv_encoder(input_shape[0])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(_POOLED_SIZE),
            nn.Flatten(),
            nn.Linear(_CONV_WIDTHS[-1] * _POOLED_SIZE**2, output_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


class ConvAutoencoder(nn.Module):
    """The shared encoder and a mirror decoder that redraws the image in [0, 1]."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        first, second = _CONV_WIDTHS
        self.encoder = conv_encoder(channels)
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
        return self.decoder(self.encoder(images))


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
        return self.activation(self.body(images) + self.shortcut(images))


class ResNetGN(nn.Module):
    """A ResNet-style network with GroupNorm (BatchNorm would break per-sample privacy)."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        first, second = _CONV_WIDTHS
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], first, kernel_size=3, padding=1),
            nn.GroupNorm(_GROUPS, first),
            nn.Tanh(),
        )
        self.stages = nn.Sequential(
            _ResidualBlock(first, first, stride=1),
            _ResidualBlock(first, second, stride=2),
            _ResidualBlock(second, second, stride=2),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(second, output_dim)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(images)))


class RecurrentClassifier(nn.Module):
    """A GRU or LSTM over left-padded sequences, read out at the last (always real) step."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, *, cell: type) -> None:
        super().__init__()
        self.recurrent = cell(input_shape[-1], _SEQUENCE_HIDDEN, batch_first=True)
        self.head = nn.Linear(_SEQUENCE_HIDDEN, output_dim)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(sequences)
        return self.head(outputs[:, -1, :])


class SequenceTransformer(nn.Module):
    """One Transformer encoder block over sequences, mean-pooled over real steps.

    The input's last channel is the padding mask; padded steps are hidden from
    attention and from the pooling.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        steps, channels = input_shape
        width = _SEQUENCE_HIDDEN
        self.embed = nn.Linear(channels, width)
        # An embedding table, not a raw parameter: Opacus computes its per-sample gradients.
        self.position = nn.Embedding(steps, width)
        self.attention = DPMultiheadAttention(width, _ATTENTION_HEADS, batch_first=True)
        self.norm_attention = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, width)
        )
        self.norm_feed_forward = nn.LayerNorm(width)
        self.head = nn.Linear(width, output_dim)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        real = sequences[:, :, -1] > 0
        batch, steps = sequences.shape[:2]
        # Positions carry the batch dimension so Opacus sees one lookup per example.
        positions = torch.arange(steps, device=sequences.device).expand(batch, steps)
        hidden = self.embed(sequences) + self.position(positions)
        attended, _ = self.attention(
            hidden, hidden, hidden, key_padding_mask=~real, need_weights=False
        )
        hidden = self.norm_attention(hidden + attended)
        hidden = self.norm_feed_forward(hidden + self.feed_forward(hidden))
        weights = real.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class NeuralCollaborativeFiltering(nn.Module):
    """Neural collaborative filtering (He et al., WWW 2017) over (patient, treatment) pairs.

    An MLP reads the element-wise product of the two embeddings (the
    matrix-factorisation term) beside the embeddings themselves and returns one
    response logit. The patient table is indexed by the hospital's own patient
    numbering and named ``local_patients``: it never leaves the hospital
    (:data:`shared.serialization.LOCAL_PREFIX`); the treatment embeddings and the
    MLP are federated.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        patients, treatments = input_shape
        self.treatments = nn.Embedding(treatments, _EMBEDDING)
        self.mlp = nn.Sequential(
            nn.Linear(3 * _EMBEDDING, _MLP_HIDDEN), nn.Tanh(), nn.Linear(_MLP_HIDDEN, output_dim)
        )
        # Created last, so the shared layers' initial values do not depend on how
        # many patients a site has.
        self.local_patients = nn.Embedding(patients, _EMBEDDING)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` response logits of ``(n, 2)`` (patient, treatment) pairs."""
        patient = self.local_patients(pairs[:, 0])
        treatment = self.treatments(pairs[:, 1])
        return self.mlp(torch.cat([patient * treatment, patient, treatment], dim=-1))


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what it accepts.

    Attributes
    ----------
    builder : ModelBuilder
        ``(input_shape, output_dim) -> nn.Module``.
    inputs : frozenset[InputKind]
        Input kinds the model reads.
    reconstructs : bool
        Whether the model is trained to redraw its input (its task is
        reconstruction, whatever the data's labels).
    grad_sample_mode : str
        Opacus' per-sample-gradient engine, the fastest measured on CPU for this
        model (``simulations/benchmark.py``).
    """

    builder: ModelBuilder
    inputs: frozenset[InputKind]
    reconstructs: bool = False
    grad_sample_mode: str = "hooks"


# Indices are no values to weigh: interactions need embeddings.
_DENSE_INPUTS = frozenset(InputKind) - {InputKind.INTERACTIONS}
_IMAGES = frozenset({InputKind.IMAGES})
_SEQUENCES = frozenset({InputKind.SEQUENCES})

MODELS: dict[ModelName, ModelSpec] = {
    ModelName.LOGREG: ModelSpec(_logreg, _DENSE_INPUTS),
    ModelName.MLP: ModelSpec(_mlp, _DENSE_INPUTS),
    ModelName.CNN: ModelSpec(ImageClassifier, _IMAGES),
    ModelName.RESNET: ModelSpec(ResNetGN, _IMAGES),
    ModelName.AUTOENCODER: ModelSpec(ConvAutoencoder, _IMAGES, reconstructs=True),
    ModelName.GRU: ModelSpec(
        lambda shape, out: RecurrentClassifier(shape, out, cell=DPGRU), _SEQUENCES
    ),
    ModelName.LSTM: ModelSpec(
        lambda shape, out: RecurrentClassifier(shape, out, cell=DPLSTM), _SEQUENCES
    ),
    ModelName.TRANSFORMER: ModelSpec(SequenceTransformer, _SEQUENCES),
    ModelName.NCF: ModelSpec(NeuralCollaborativeFiltering, frozenset({InputKind.INTERACTIONS})),
}


def model_task(name: ModelName, data_task: Task) -> Task:
    """The task model ``name`` learns on data whose labels define ``data_task``."""
    return Task(TaskKind.RECONSTRUCTION) if MODELS[name].reconstructs else data_task


def check_model_input(name: ModelName, kind: InputKind) -> None:
    """Refuse a model that cannot read the data's inputs.

    Raises
    ------
    ConfigError
        Naming the model, the data's input kind and the models that fit it.
    """
    if kind not in MODELS[name].inputs:
        fitting = [str(model) for model, spec in MODELS.items() if kind in spec.inputs]
        raise ConfigError(
            "model",
            f"model '{name}' cannot read {kind} data; for {kind} choose one of "
            f"{', '.join(fitting)}",
        )


def build_model(
    name: ModelName, *, input_shape: tuple[int, ...], input_kind: InputKind, task: Task, seed: int
) -> nn.Module:
    """Build a freshly initialised model.

    Parameters
    ----------
    name : ModelName
        Registry name.
    input_shape : tuple[int, ...]
        Shape of one example's input (for interactions: how many patients and
        treatments there are, :attr:`shared.data.Examples.input_shape`).
    input_kind : InputKind
        What the input is (checked against the model).
    task : Task
        The task learnt (its output width).
    seed : int
        Seed of the initial weights, so every party builds the same model.

    Returns
    -------
    nn.Module
        The model, on the CPU, in float32.

    Raises
    ------
    ConfigError
        If the model cannot read ``input_kind`` inputs.
    """
    check_model_input(name, input_kind)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MODELS[name].builder(input_shape, task.output_dim)
