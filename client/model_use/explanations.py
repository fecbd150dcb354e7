"""Why the model predicts what it does: integrated gradients from Captum, at the hospital.

Each prediction is explained by integrated gradients (Sundararajan et al., 2017,
as Captum implements them): how much each input moved the model's output from
what it gives a baseline input. The output explained is the logit of the
positive class (binary), of the predicted class (multiclass), or the predicted
value in the target's federation-scaled units (regression). Baselines:

* a table row: all zeros, which after scaling is the middle of every feature's
  public range (on a log scale where the contract says so);
* a stay: the same for every feature at every real time step, with the stay's
  own padding mask kept, so padding is never credited;
* an image: black.

Integrated gradients are complete: a row's attributions add up to its output
minus the baseline's. For a linear model they are exactly weight times
(input - baseline).

The global summary (mean absolute attribution per feature over a file) is
computed from the hospital's own patients and stays at the hospital with the
rest of an evaluation: it is not sent to the aggregator.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn

from fedcare.shared.data import InputKind
from fedcare.shared.sequences import MASK_CHANNEL
from fedcare.shared.tasks import Task, TaskKind

DEFAULT_STEPS = 32
"""Integration steps (Riemann sum points) per attribution."""
_CHUNK = 64


def integrated_gradients(
    model: nn.Module,
    inputs: np.ndarray,
    task: Task,
    kind: InputKind,
    *,
    steps: int = DEFAULT_STEPS,
) -> np.ndarray:
    """Attribute each input's output to its input values.

    Parameters
    ----------
    model : nn.Module
        The model, in evaluation mode.
    inputs : np.ndarray
        Standardised model inputs ``(n, *input_shape)``.
    task : Task
        Binary, multiclass or regression.
    kind : InputKind
        Table, images or sequences (picks the baseline).
    steps : int
        Integration steps.

    Returns
    -------
    np.ndarray
        float32, the shape of ``inputs``: each value's attribution.
    """
    model = model.eval()
    method = IntegratedGradients(model)
    chunks = []
    for start in range(0, len(inputs), _CHUNK):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + _CHUNK]))
        with torch.no_grad():
            outputs = model(batch)
        target = outputs.argmax(dim=1) if task.kind is TaskKind.MULTICLASS else 0
        attributed = method.attribute(
            batch.requires_grad_(),
            baselines=baseline(batch.detach(), kind),
            target=target,
            n_steps=steps,
        )
        chunks.append(attributed.detach().numpy().astype(np.float32))
    if not chunks:
        return np.zeros_like(inputs, dtype=np.float32)
    return np.concatenate(chunks)


def baseline(inputs: torch.Tensor, kind: InputKind) -> torch.Tensor:
    """Return the reference input each input is compared with (see the module docstring)."""
    reference = torch.zeros_like(inputs)
    if kind is InputKind.SEQUENCES:
        reference[..., MASK_CHANNEL] = inputs[..., MASK_CHANNEL]
    return reference


def per_feature(attributions: np.ndarray, kind: InputKind) -> np.ndarray:
    """Sum attributions per input feature.

    Returns
    -------
    np.ndarray
        ``(n, features)`` for tables (unchanged) and sequences (summed over time
        steps, the mask channel dropped); ``(n, height, width)`` maps for images
        (summed over channels).
    """
    if kind is InputKind.SEQUENCES:
        return np.asarray(attributions[..., :MASK_CHANNEL].sum(axis=1))
    if kind is InputKind.IMAGES:
        return np.asarray(attributions.sum(axis=1))
    return attributions


def explained_names(feature_names: tuple[str, ...], kind: InputKind) -> tuple[str, ...]:
    """Names of what :func:`per_feature` returns per column (no mask for sequences)."""
    return feature_names[:MASK_CHANNEL] if kind is InputKind.SEQUENCES else feature_names


def global_importance(summed: np.ndarray) -> np.ndarray:
    """Mean absolute attribution per feature (or per pixel), over every explained input."""
    if len(summed) == 0:
        return np.zeros(summed.shape[1:], dtype=np.float32)
    mean: np.ndarray = np.abs(summed).mean(axis=0).astype(np.float32)
    return mean
