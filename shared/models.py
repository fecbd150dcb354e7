"""Model registry: fedcare's built-in networks, and how a run's model is named.

Every builder takes one example's input shape, the task's output width and a
:class:`shared.networks.ModelSize`, so one name serves every task of its input
kind (for interactions the "shape" is the number of patients and of treatments,
:attr:`shared.data.Examples.input_shape`). Models installed as plugins
(:mod:`shared.model_plugins`) are resolved through :func:`model_spec` alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from opacus.layers import DPGRU, DPLSTM
from torch import nn

from fedcare.shared.config.training import ModelName
from fedcare.shared.data import InputKind
from fedcare.shared.errors import ConfigError
from fedcare.shared.networks import (
    ConvAutoencoder,
    ImageClassifier,
    ModelSize,
    NeuralCollaborativeFiltering,
    RecurrentClassifier,
    ResNetGN,
    SequenceTransformer,
    logistic_regression,
    mlp,
)
from fedcare.shared.tasks import Task, TaskKind

ModelBuilder = Callable[[tuple[int, ...], int, ModelSize], nn.Module]

SMALLEST = ModelSize()
"""Width 1 and depth 1: fedcare's original networks."""

_RESNET18_WIDTHS = [64, 128, 256, 512]


class _Copy(nn.Module):
    """Return a copy of the input (a fresh tensor later layers may change in place)."""

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return a copy of ``tensor``."""
        return tensor.clone()


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with GroupNorm, from Hugging Face ``transformers``.

    The backbone is ``transformers``' ``ResNetModel`` with basic blocks of depths
    2-2-2-2, the layout of torchvision's ``resnet18`` (same parameter shapes and
    outputs; see README, "Model families"), its BatchNorm replaced by GroupNorm
    with 32 groups by Opacus' ``ModuleValidator.fix``. It reads any number of
    channels at any image size of 28 pixels or more; a linear head reads the
    pooled 512 features.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> None:
        super().__init__()
        # Imported here: only a run that trains ResNet-18 pays for transformers.
        from opacus.validators import ModuleValidator
        from transformers import ResNetConfig, ResNetModel

        config = ResNetConfig(
            num_channels=input_shape[0],
            embedding_size=_RESNET18_WIDTHS[0],
            hidden_sizes=_RESNET18_WIDTHS,
            depths=[2, 2, 2, 2],
            layer_type="basic",
            hidden_act="relu",
            downsample_in_first_stage=False,
        )
        self.backbone = ModuleValidator.fix(ResNetModel(config))
        # Each block adds its shortcut in place onto its last normalisation's output;
        # Opacus' backward hooks forbid in-place changes to a hooked layer's output,
        # so that output is copied first (the block's otherwise empty activation).
        for module in self.backbone.modules():
            if isinstance(getattr(module, "activation", None), nn.Identity):
                module.activation = _Copy()
        self.head = nn.Linear(_RESNET18_WIDTHS[-1], output_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(n, output_dim)`` logits of ``n`` images."""
        pooled = self.backbone(pixel_values=images).pooler_output
        output: torch.Tensor = self.head(pooled.flatten(start_dim=1))
        return output


@dataclass(frozen=True)
class ModelSpec:
    """A model fedcare can build: how, and what it accepts.

    Attributes
    ----------
    builder : ModelBuilder
        ``(input_shape, output_dim, size) -> nn.Module``.
    inputs : frozenset[InputKind]
        Input kinds the model reads.
    reconstructs : bool
        Whether the model is trained to redraw its input (its task is
        reconstruction, whatever the data's labels).
    grad_sample_mode : str
        Opacus' per-sample-gradient engine, the fastest correct one measured on
        CPU for this model (``simulations/BENCHMARKS.md``).
    source : str
        Where the code comes from: ``fedcare``, or a plugin's ``package==version``.
    """

    builder: ModelBuilder
    inputs: frozenset[InputKind]
    reconstructs: bool = False
    grad_sample_mode: str = "hooks"
    source: str = "fedcare"


# Indices are no values to weigh: interactions need embeddings.
_DENSE_INPUTS = frozenset(InputKind) - {InputKind.INTERACTIONS}
_IMAGES = frozenset({InputKind.IMAGES})
_SEQUENCES = frozenset({InputKind.SEQUENCES})


def _recurrent(cell: type) -> ModelBuilder:
    def build(shape: tuple[int, ...], out: int, size: ModelSize) -> nn.Module:
        return RecurrentClassifier(shape, out, size, cell=cell)

    return build


MODELS: dict[ModelName, ModelSpec] = {
    ModelName.LOGREG: ModelSpec(logistic_regression, _DENSE_INPUTS),
    ModelName.MLP: ModelSpec(mlp, _DENSE_INPUTS),
    ModelName.CNN: ModelSpec(ImageClassifier, _IMAGES),
    ModelName.RESNET: ModelSpec(ResNetGN, _IMAGES),
    ModelName.AUTOENCODER: ModelSpec(ConvAutoencoder, _IMAGES, reconstructs=True),
    ModelName.GRU: ModelSpec(_recurrent(DPGRU), _SEQUENCES),
    ModelName.LSTM: ModelSpec(_recurrent(DPLSTM), _SEQUENCES),
    ModelName.TRANSFORMER: ModelSpec(SequenceTransformer, _SEQUENCES),
    ModelName.NCF: ModelSpec(NeuralCollaborativeFiltering, frozenset({InputKind.INTERACTIONS})),
    ModelName.RESNET18: ModelSpec(ResNet18, _IMAGES, grad_sample_mode="ghost"),
}


def model_spec(name: str, version: str = "") -> ModelSpec:
    """Return the spec of built-in model ``name``, or of the installed plugin ``name``.

    Raises
    ------
    ModelPluginError
        If ``name`` is no built-in model and no plugin of that name and
        ``version`` is installed here.
    """
    if name in MODELS:
        return MODELS[ModelName(name)]
    return _plugin_spec(name, version)


def _plugin_spec(name: str, version: str) -> ModelSpec:
    """Return a spec that builds installed plugin ``name`` (:mod:`shared.model_plugins`).

    A plugin reads any dense input (tables, images, sequences); whether it
    fits the data's shape shows when the model is checked
    (:func:`shared.run_model.build_run_model`). Width and depth do not apply.
    """
    from fedcare.shared.model_plugins import load_plugin

    builder, source = load_plugin(name, version)

    def build(input_shape: tuple[int, ...], output_dim: int, size: ModelSize) -> nn.Module:
        return builder(input_shape, output_dim)

    return ModelSpec(build, _DENSE_INPUTS, source=source)


def model_task(name: str, data_task: Task, version: str = "") -> Task:
    """Return the task model ``name`` learns on data whose labels define ``data_task``."""
    if model_spec(name, version).reconstructs:
        return Task(TaskKind.RECONSTRUCTION)
    return data_task


def check_model_input(name: str, kind: InputKind, version: str = "") -> None:
    """Refuse a model that cannot read the data's inputs.

    Raises
    ------
    ConfigError
        Naming the model, the data's input kind and the models that fit it.
    """
    if kind not in model_spec(name, version).inputs:
        fitting = [str(model) for model, spec in MODELS.items() if kind in spec.inputs]
        raise ConfigError(
            "model",
            f"model '{name}' cannot read {kind} data; for {kind} choose one of "
            f"{', '.join(fitting)}",
        )


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    input_kind: InputKind,
    task: Task,
    seed: int,
    size: ModelSize = SMALLEST,
    version: str = "",
) -> nn.Module:
    """Build a freshly initialised model.

    Parameters
    ----------
    name : str
        Registry name, or an installed plugin's entry point name.
    input_shape : tuple[int, ...]
        Shape of one example's input (for interactions: how many patients and
        treatments there are, :attr:`shared.data.Examples.input_shape`).
    input_kind : InputKind
        What the input is (checked against the model).
    task : Task
        The task learnt (its output width).
    seed : int
        Seed of the initial weights, so every party builds the same model.
    size : ModelSize
        Width and depth of fedcare's own families.
    version : str
        The plugin package's version the run requires (plugins only).

    Returns
    -------
    nn.Module
        The model, on the CPU, in float32, as the builder made it (not yet
        checked for DP-SGD: :func:`shared.run_model.build_run_model` does that).

    Raises
    ------
    ConfigError
        If the model cannot read ``input_kind`` inputs.
    ModelPluginError
        If a plugin model is missing here or has another version.
    """
    spec = model_spec(name, version)
    check_model_input(name, input_kind, version)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return spec.builder(input_shape, task.output_dim, size)
