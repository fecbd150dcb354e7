"""Learning tasks: what a model predicts, its loss, and how outputs become scores."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from torch import nn


class TaskKind(StrEnum):
    """The three task families fedcare trains."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


@dataclass(frozen=True)
class Task:
    """A prediction task.

    Attributes
    ----------
    kind : TaskKind
        Binary diagnosis, multiclass diagnosis, or regression (prediction).
    num_classes : int
        Number of classes (2 for binary; unused for regression).
    positive_label : str
        Clinical meaning of label 1 for binary tasks (e.g. ``malignant``); the
        sensitivity and specificity are computed with respect to it.
    """

    kind: TaskKind
    num_classes: int = 2
    positive_label: str = "positive"

    def __post_init__(self) -> None:
        if self.kind is TaskKind.MULTICLASS and self.num_classes < 3:
            raise ValueError(f"a multiclass task needs >= 3 classes (got {self.num_classes})")

    @property
    def output_dim(self) -> int:
        """Width of the model's last layer."""
        return self.num_classes if self.kind is TaskKind.MULTICLASS else 1

    @property
    def label_dtype(self) -> torch.dtype:
        """Dtype the loss expects for targets."""
        return torch.long if self.kind is TaskKind.MULTICLASS else torch.float32

    def loss_fn(self) -> nn.Module:
        """Return the training loss (mean over the batch)."""
        if self.kind is TaskKind.BINARY:
            return _SqueezedLoss(nn.BCEWithLogitsLoss())
        if self.kind is TaskKind.MULTICLASS:
            return nn.CrossEntropyLoss()
        return _SqueezedLoss(nn.MSELoss())

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        """Turn raw model outputs into probabilities (classification) or predictions.

        Returns
        -------
        np.ndarray
            Shape ``(n,)`` for binary and regression, ``(n, num_classes)`` for multiclass.
        """
        with torch.no_grad():
            if self.kind is TaskKind.BINARY:
                return torch.sigmoid(outputs.squeeze(-1)).cpu().numpy()
            if self.kind is TaskKind.MULTICLASS:
                return torch.softmax(outputs, dim=-1).cpu().numpy()
            return outputs.squeeze(-1).cpu().numpy()


class _SqueezedLoss(nn.Module):
    """Apply a loss to ``(n, 1)`` outputs and ``(n,)`` targets."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs.squeeze(-1), targets)
