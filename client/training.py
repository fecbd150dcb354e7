"""Local training at a hospital: DP-SGD with Opacus, or plain SGD when DP is off.

These functions know nothing of Flower; the ClientApp and the simulation's
baselines call them alike.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# Imported for its effect: registers ghost norms for convolutions with Opacus.
from fedcare.client import conv_ghost_norm  # noqa: F401
from fedcare.client.augmentation import shift_images
from fedcare.client.proximal import local_optimizer
from fedcare.shared.data import Examples
from fedcare.shared.errors import FedcareError
from fedcare.shared.privacy import ACCOUNTANT, DpSgdPlan, HistoryEntry
from fedcare.shared.tasks import PerExampleLoss, Task, TaskKind


@dataclass(frozen=True)
class TrainOutcome:
    """What one bout of local training did.

    Attributes
    ----------
    mean_loss : float
        Mean training loss over the non-empty batches.
    steps : int
        Optimiser steps taken.
    history : tuple[HistoryEntry, ...]
        The accountant history after training (empty without DP): every entry
        before it plus the steps just taken.
    """

    mean_loss: float
    steps: int
    history: tuple[HistoryEntry, ...] = ()


def _loader(
    data: Examples, task: Task, batch_size: int, generator: torch.Generator | None
) -> DataLoader[tuple[torch.Tensor, ...]]:
    targets = task.targets(data.features, data.labels)
    dataset = TensorDataset(
        torch.from_numpy(data.features), torch.as_tensor(targets, dtype=task.label_dtype)
    )
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)


def _run_epochs(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    epochs: int,
    device: torch.device,
    shift: bool,
    reconstruct: bool,
) -> tuple[float, int]:
    """Train for ``epochs``; return (mean loss over non-empty batches, steps).

    With ``shift``, every image is moved by a few random pixels first (and an
    autoencoder, ``reconstruct``, redraws the shifted image).
    """
    model.train()
    losses, steps = [], 0
    for _ in range(epochs):
        for features, targets in loader:
            features, targets = features.to(device), targets.to(device)
            optimizer.zero_grad()
            if len(targets) == 0:
                # Poisson sampling can draw an empty batch; the step still happens
                # (and is accounted) so the sampling analysis stays valid.
                _step_without_examples(optimizer)
                steps += 1
                continue
            if shift:
                features = shift_images(features)
                if reconstruct:
                    targets = features
            loss = criterion(model(features), targets)
            loss.backward()
            optimizer.step()
            steps += 1
            losses.append(loss.item())
    return (sum(losses) / len(losses) if losses else math.nan), steps


def _step_without_examples(optimizer: torch.optim.Optimizer) -> None:
    """Take a DP-SGD step on an empty batch: noise only, accounted as any step.

    The model never sees the empty batch (some layers, Opacus' DP attention among
    them, cannot take one); every trainable parameter gets the empty
    per-example gradients Opacus' optimizers read (``grad_sample`` for the
    per-example modes, ``grad`` for ghost clipping), so the clipped sum is zero
    and the step adds the calibrated noise alone.
    """
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.requires_grad:
                parameter.grad = torch.zeros_like(parameter)
                parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))
    optimizer.step()


def train_private(
    model: nn.Module,
    data: Examples,
    task: Task,
    *,
    plan: DpSgdPlan,
    max_grad_norm: float,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    history: Sequence[HistoryEntry],
    device: torch.device,
    grad_sample_mode: str = "hooks",
    augment: bool = True,
    criterion: PerExampleLoss | None = None,
    proximal_mu: float = 0.0,
) -> TrainOutcome:
    """Train ``model`` in place with DP-SGD, continuing the accountant ``history``.

    Only parameters that require gradients train: a frozen pretrained backbone
    is neither clipped nor noised nor changed, and the accounting covers the
    trained parameters, the only ones a hospital sends.

    Parameters
    ----------
    model : nn.Module
        Trained in place; Opacus' hooks are removed before returning.
    data : Examples
        The hospital's (standardised) training split.
    task : Task
        Loss and label dtype.
    plan : DpSgdPlan
        Noise multiplier and sample rate calibrated for the whole run.
    max_grad_norm : float
        Per-sample clipping bound.
    learning_rate, epochs, batch_size : float, int, int
        SGD settings for this round.
    history : Sequence[HistoryEntry]
        Everything this dataset spent before; Opacus appends this round's steps.
    device : torch.device
        Where to train.
    grad_sample_mode : str
        Opacus' per-sample-gradient engine (``hooks``, ``functorch``, ``ghost``);
        the model registry names the fastest for each model. The privacy
        analysis is the same for all; ``ghost`` clips through the criterion,
        which returns one loss per example (:class:`shared.tasks.PerExampleLoss`).
    augment : bool
        Shift images by a few pixels (:mod:`client.augmentation`); each example
        is transformed on its own, so the accounting is unchanged.
    criterion : PerExampleLoss | None
        The loss; ``None``: the task's unweighted loss.
    proximal_mu : float
        FedProx's coefficient: pulls training towards the model it started
        from. Added after clipping and noising (:mod:`client.proximal`), so the
        accounting is unchanged.

    Returns
    -------
    TrainOutcome
        With the extended accountant history.

    Raises
    ------
    FedcareError
        If Opacus derives a sample rate other than the plan's (the data changed
        size since the noise was calibrated).
    """
    model = model.to(device).train()
    optimizer = local_optimizer(
        trainable_parameters(model), learning_rate=learning_rate, proximal_mu=proximal_mu
    )
    criterion = criterion if criterion is not None else task.loss_fn()
    # No seeded generator: privacy amplification by subsampling needs fresh,
    # unpredictable Poisson draws in every round.
    loader = _loader(data, task, batch_size, generator=None)
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off; README's privacy model states it.
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        engine.accountant.history = [tuple(entry) for entry in history]
        made = engine.make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=grad_sample_mode,
        )
    if grad_sample_mode == "ghost":
        # Ghost clipping runs its two backward passes inside the loss it returns.
        private_model, optimizer, criterion, private_loader = made
    else:
        private_model, optimizer, private_loader = made
    _check_sample_rate(private_loader.sample_rate, plan)
    with warnings.catch_warnings():
        # Opacus' per-sample hooks trip this torch notice on every backward pass.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        mean_loss, steps = _run_epochs(
            private_model,
            private_loader,
            optimizer,
            criterion,
            epochs=epochs,
            device=device,
            shift=augment and data.kind.is_image,
            reconstruct=task.kind is TaskKind.RECONSTRUCTION,
        )
    private_model.remove_hooks()
    return TrainOutcome(
        mean_loss=mean_loss,
        steps=steps,
        history=tuple(tuple(entry) for entry in engine.accountant.history),
    )


def _check_sample_rate(sample_rate: float, plan: DpSgdPlan) -> None:
    """Refuse to train when Opacus samples at another rate than the noise was calibrated for."""
    if not math.isclose(sample_rate, plan.sample_rate):
        raise FedcareError(
            f"Opacus samples at rate {sample_rate:.6f} but the privacy plan "
            f"was calibrated for {plan.sample_rate:.6f}; the training data changed size "
            "since the run started. Start a new run."
        )


def train_plain(
    model: nn.Module,
    data: Examples,
    task: Task,
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    augment: bool = True,
    criterion: PerExampleLoss | None = None,
    proximal_mu: float = 0.0,
) -> TrainOutcome:
    """Train ``model``'s trainable parameters in place with plain (non-private) SGD.

    Images are shifted when ``augment``; ``criterion`` defaults to the task's loss;
    ``proximal_mu`` > 0 adds FedProx's pull towards the starting model.
    """
    model = model.to(device).train()
    optimizer = local_optimizer(
        trainable_parameters(model), learning_rate=learning_rate, proximal_mu=proximal_mu
    )
    loader = _loader(data, task, batch_size, generator=torch.Generator().manual_seed(seed))
    mean_loss, steps = _run_epochs(
        model,
        loader,
        optimizer,
        criterion if criterion is not None else task.loss_fn(),
        epochs=epochs,
        device=device,
        shift=augment and data.kind.is_image,
        reconstruct=task.kind is TaskKind.RECONSTRUCTION,
    )
    return TrainOutcome(mean_loss=mean_loss, steps=steps)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Return the parameters training changes (a frozen backbone's are left out)."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
