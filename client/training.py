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

from fedcare.client.augmentation import shift_images
from fedcare.shared.data import Examples
from fedcare.shared.errors import FedcareError
from fedcare.shared.privacy import ACCOUNTANT, DpSgdPlan, HistoryEntry
from fedcare.shared.tasks import Task, TaskKind


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
) -> DataLoader:
    targets = task.targets(data.features, data.labels)
    dataset = TensorDataset(
        torch.from_numpy(data.features), torch.as_tensor(targets, dtype=task.label_dtype)
    )
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)


def _run_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    task: Task,
    *,
    epochs: int,
    device: torch.device,
    shift: bool,
) -> tuple[float, int]:
    """Train for ``epochs``; return (mean loss over non-empty batches, steps).

    With ``shift``, every image is moved by a few random pixels first (and an
    autoencoder redraws the shifted image).
    """
    loss_fn = task.loss_fn()
    model.train()
    losses, steps = [], 0
    for _ in range(epochs):
        for features, targets in loader:
            features, targets = features.to(device), targets.to(device)
            if shift:
                features = shift_images(features)
                if task.kind is TaskKind.RECONSTRUCTION:
                    targets = features
            optimizer.zero_grad()
            loss = loss_fn(model(features), targets)
            loss.backward()
            # Poisson sampling can draw an empty batch; the step still happens
            # (and is accounted) so the sampling analysis stays valid.
            optimizer.step()
            steps += 1
            if len(targets):
                losses.append(loss.item())
    return (sum(losses) / len(losses) if losses else math.nan), steps


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
) -> TrainOutcome:
    """Train ``model`` in place with DP-SGD, continuing the accountant ``history``.

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
        Opacus' per-sample-gradient engine (``hooks``, ``functorch``, ...); the
        model registry names the fastest for each model. The privacy analysis is
        the same for all.
    augment : bool
        Shift images by a few pixels (:mod:`client.augmentation`); each example
        is transformed on its own, so the accounting is unchanged.

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
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    # No seeded generator: privacy amplification by subsampling needs fresh,
    # unpredictable Poisson draws in every round.
    loader = _loader(data, task, batch_size, generator=None)
    with warnings.catch_warnings():
        # Opacus warns that secure_mode is off; README's privacy model states it.
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        engine.accountant.history = [tuple(entry) for entry in history]
        private_model, optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=grad_sample_mode,
        )
    if not math.isclose(private_loader.sample_rate, plan.sample_rate):
        raise FedcareError(
            f"Opacus samples at rate {private_loader.sample_rate:.6f} but the privacy plan "
            f"was calibrated for {plan.sample_rate:.6f}; the training data changed size "
            "since the run started. Start a new run."
        )
    with warnings.catch_warnings():
        # Opacus' per-sample hooks trip this torch notice on every backward pass.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        mean_loss, steps = _run_epochs(
            private_model,
            private_loader,
            optimizer,
            task,
            epochs=epochs,
            device=device,
            shift=augment and data.kind.is_image,
        )
    private_model.remove_hooks()
    return TrainOutcome(
        mean_loss=mean_loss,
        steps=steps,
        history=tuple(tuple(entry) for entry in engine.accountant.history),
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
) -> TrainOutcome:
    """Train ``model`` in place with plain (non-private) SGD (images shifted when ``augment``)."""
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    loader = _loader(data, task, batch_size, generator=torch.Generator().manual_seed(seed))
    mean_loss, steps = _run_epochs(
        model,
        loader,
        optimizer,
        task,
        epochs=epochs,
        device=device,
        shift=augment and data.kind.is_image,
    )
    return TrainOutcome(mean_loss=mean_loss, steps=steps)
