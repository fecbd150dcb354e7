"""The run's model, built the same way by every party: one place answers "which network".

:func:`build_run_model` builds the named model (built-in or installed plugin),
checks it for DP-SGD (refusing or fixing its layers), loads the pretrained file
and freezes what the run does not train. The aggregator and every hospital call
it with the same settings and seed, so they hold the same network and the same
layout of federated tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedcare.shared.config.training import GradSampleMode, TrainingSettings
from fedcare.shared.data import InputKind
from fedcare.shared.errors import ConfigError
from fedcare.shared.fine_tuning import apply_fine_tuning, load_pretrained
from fedcare.shared.model_check import dp_problems, fix_model, refuse_problems
from fedcare.shared.models import ModelSpec, build_model, model_spec, model_task
from fedcare.shared.networks import ModelSize
from fedcare.shared.tasks import CLASSIFICATION, PerExampleLoss, Task, TaskKind


@dataclass(frozen=True)
class RunModel:
    """The run's model and what was done to it.

    Attributes
    ----------
    module : nn.Module
        The network, on the CPU.
    spec : ModelSpec
        Where it comes from and what it reads.
    fixed_layers : tuple[str, ...]
        Layers ``fix-model`` replaced, one line each.
    pretrained : tuple[str, ...]
        Tensors loaded from the pretrained file.
    grad_sample_mode : str
        Opacus' per-sample-gradient engine DP-SGD uses for it.
    """

    module: nn.Module
    spec: ModelSpec
    fixed_layers: tuple[str, ...] = ()
    pretrained: tuple[str, ...] = ()
    grad_sample_mode: str = "hooks"

    def trained_parameters(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every parameter training changes (and hospitals send)."""
        return {
            name: tuple(p.shape) for name, p in self.module.named_parameters() if p.requires_grad
        }

    def describe(self, training: TrainingSettings) -> dict[str, Any]:
        """Return what the report records about the model."""
        trained = self.trained_parameters()
        return {
            "name": training.model,
            "source": self.spec.source,
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "trained_parameters": sum(int(torch.Size(shape).numel()) for shape in trained.values()),
            "trained_tensors": len(trained),
            "fine_tune": training.fine_tune.value,
            "fixed_layers": list(self.fixed_layers),
            "pretrained_tensors": len(self.pretrained),
            "grad_sample_mode": self.grad_sample_mode,
        }


def build_run_model(
    training: TrainingSettings,
    *,
    input_shape: tuple[int, ...],
    input_kind: InputKind,
    task: Task,
    seed: int,
    private: bool,
    party: str,
) -> RunModel:
    """Build, check, load and freeze the run's model as ``training`` says.

    Parameters
    ----------
    training : TrainingSettings
        The run's model settings.
    input_shape, input_kind, task, seed
        As :func:`shared.models.build_model` takes them.
    private : bool
        Whether DP-SGD trains it: then every layer must be DP-compatible.
    party : str
        Who builds it (a hospital's name, ``the aggregator``), for messages.

    Raises
    ------
    ConfigError
        If a layer cannot be trained with DP-SGD (and ``fix-model`` is off), the
        pretrained file is missing or differs, or the model does not fit the data.
    ModelPluginError
        If a plugin model is missing here or has another version.
    """
    spec = model_spec(training.model, training.model_version)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = build_model(
            training.model,
            input_shape=input_shape,
            input_kind=input_kind,
            task=task,
            seed=seed,
            size=ModelSize(training.model_width, training.model_depth),
            version=training.model_version,
        )
        fixed: list[str] = []
        if training.fix_model:
            module, fixed = fix_model(module)
        elif private:
            refuse_problems(dp_problems(module), model=training.model)
        pretrained: list[str] = []
        if training.pretrained_weights:
            pretrained = load_pretrained(
                module,
                Path(training.pretrained_weights),
                training.pretrained_sha256,
                party=party,
            )
        module = apply_fine_tuning(
            module, training.fine_tune, rank=training.lora_rank, pretrained=pretrained
        )
    _check_outputs(module, input_shape, input_kind, task, name=training.model)
    mode = training.grad_sample_mode
    return RunModel(
        module=module,
        spec=spec,
        fixed_layers=tuple(fixed),
        pretrained=tuple(pretrained),
        grad_sample_mode=spec.grad_sample_mode if mode is GradSampleMode.AUTO else mode.value,
    )


def _check_outputs(
    module: nn.Module, input_shape: tuple[int, ...], kind: InputKind, task: Task, *, name: str
) -> None:
    """Refuse a model whose output on two dummy examples has the wrong shape."""
    if kind is InputKind.INTERACTIONS:
        return  # index inputs; the built-in NCF model is built for them
    dummy = torch.zeros((2, *input_shape))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            outputs = module(dummy)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ConfigError(
            "model",
            f"model '{name}' cannot read inputs of shape {input_shape} ({kind}): "
            f"{type(error).__name__}: {error}",
        ) from error
    finally:
        module.train(was_training)
    expected = tuple(dummy.shape) if task.kind is TaskKind.RECONSTRUCTION else (2, task.output_dim)
    if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != expected:
        shape = (
            tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        )
        raise ConfigError(
            "model",
            f"model '{name}' returns {shape} for 2 examples; the task needs a tensor of "
            f"shape {expected}",
        )


def run_task(training: TrainingSettings, data_task: Task) -> Task:
    """Return the task the run's model learns on data whose labels define ``data_task``.

    Raises
    ------
    ModelPluginError
        If a plugin model is missing here or has another version.
    """
    return model_task(training.model, data_task, training.model_version)


def run_criterion(training: TrainingSettings, task: Task) -> PerExampleLoss:
    """Return the run's training loss: the task's, each class weighted by ``class-weights``.

    Raises
    ------
    ConfigError
        If class weights are set for a task without classes, or their count is
        not the number of classes.
    """
    weights = training.loss_class_weights
    if not weights:
        return task.loss_fn()
    classes = task.num_classes
    if task.kind not in CLASSIFICATION or len(weights) != classes:
        raise ConfigError(
            "class-weights",
            f"needs one weight per class of a classification task ({classes} for this "
            f"{task.kind} task), got {len(weights)}",
        )
    return task.class_weighted_loss_fn(torch.tensor(weights, dtype=torch.float32))
