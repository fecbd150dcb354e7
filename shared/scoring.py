"""Score examples with a model: raw outputs and the task's scores, batch by batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedcare.shared.tasks import Task

SCORING_BATCH = 256
"""Examples per forward pass: bounds memory for images and sequences."""


def model_outputs(model: nn.Module, inputs: np.ndarray, device: torch.device) -> torch.Tensor:
    """Return the model's raw outputs for ``inputs``, on the CPU, without gradients.

    Parameters
    ----------
    model : nn.Module
        The model, in evaluation mode.
    inputs : np.ndarray
        ``(n, *input_shape)`` float32 model inputs (already standardised).
    device : torch.device
        Where to run the model.

    Returns
    -------
    torch.Tensor
        ``(n, output_dim)`` outputs (logits for classification).
    """
    model = model.to(device).eval()
    batches = []
    with torch.no_grad():
        for start in range(0, len(inputs), SCORING_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + SCORING_BATCH]))
            batches.append(model(batch.to(device)).cpu())
    if not batches:
        return torch.zeros((0, 1))
    return torch.cat(batches)


def score_examples(
    model: nn.Module, inputs: np.ndarray, task: Task, device: torch.device
) -> np.ndarray:
    """Return the task's scores for ``inputs`` (:meth:`shared.tasks.Task.scores`).

    Probabilities ``(n,)`` of the positive class for binary tasks, ``(n, classes)``
    for multiclass ones, predictions in the target's units for regression.
    """
    return task.scores(model_outputs(model, inputs, device))
