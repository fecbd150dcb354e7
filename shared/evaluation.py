"""Evaluate a model on tabular data: loss and the task's clinical metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared.data import TabularData
from shared.metrics import compute_metrics
from shared.tasks import Task


@dataclass(frozen=True)
class Evaluation:
    """The result of evaluating a model on ``num_examples`` rows."""

    loss: float
    metrics: dict[str, float]
    num_examples: int


def evaluate_model(
    model: nn.Module, data: TabularData, task: Task, device: torch.device
) -> Evaluation:
    """Evaluate ``model`` on all of ``data`` in one batch (tabular sets are small)."""
    model = model.to(device).eval()
    features = torch.from_numpy(data.features).to(device)
    targets = torch.as_tensor(data.labels, dtype=task.label_dtype, device=device)
    with torch.no_grad():
        outputs = model(features)
        loss = float(task.loss_fn()(outputs, targets))
    scores = task.scores(outputs)
    return Evaluation(
        loss=loss, metrics=compute_metrics(task, data.labels, scores), num_examples=len(data)
    )
