"""Evaluate a model on examples: loss and the task's clinical metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.data import Examples
from shared.metrics import compute_metrics
from shared.tasks import Task, TaskKind

EVALUATION_BATCH = 256
"""Examples per forward pass: bounds memory for images and sequences."""


@dataclass(frozen=True)
class Evaluation:
    """The result of evaluating a model on ``num_examples`` examples."""

    loss: float
    metrics: dict[str, float]
    num_examples: int


def evaluate_model(
    model: nn.Module, data: Examples, task: Task, device: torch.device
) -> Evaluation:
    """Evaluate ``model`` on all of ``data``: mean loss and the task's metrics."""
    model = model.to(device).eval()
    targets = task.targets(data.features, data.labels)
    loss_fn = task.loss_fn()
    outputs, weighted_loss = [], 0.0
    with torch.no_grad():
        for start in range(0, len(data), EVALUATION_BATCH):
            batch = slice(start, start + EVALUATION_BATCH)
            batch_outputs = model(torch.from_numpy(data.features[batch]).to(device))
            batch_targets = torch.as_tensor(targets[batch], dtype=task.label_dtype, device=device)
            weighted_loss += float(loss_fn(batch_outputs, batch_targets)) * len(batch_targets)
            outputs.append(batch_outputs)
    scores = task.scores(torch.cat(outputs))
    truth = data.features if task.kind is TaskKind.RECONSTRUCTION else data.labels
    return Evaluation(
        loss=weighted_loss / max(len(data), 1),
        metrics=compute_metrics(task, np.asarray(truth), scores),
        num_examples=len(data),
    )
