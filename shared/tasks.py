"""Learning tasks: what a model predicts, its loss, and how outputs become scores."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from torch import nn
from torch.nn import functional


class TaskKind(StrEnum):
    """The task families fedcare trains."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"
    SURVIVAL = "survival"
    """Discrete-time survival: labels are (time bin, event), outputs one hazard logit per bin."""
    RECONSTRUCTION = "reconstruction"
    """Autoencoding: the input is its own target; labels are unused."""
    RECOMMENDATION = "recommendation"
    """Treatment recommendation: labels are 0/1 outcomes of (patient, treatment) pairs,
    outputs one response logit; scored by where a held-out response ranks."""


CLASSIFICATION = frozenset({TaskKind.BINARY, TaskKind.MULTICLASS})


@dataclass(frozen=True)
class Task:
    """A prediction task.

    Attributes
    ----------
    kind : TaskKind
        What is predicted.
    num_classes : int
        Number of classes (2 for binary), or of time bins for survival; unused
        otherwise.
    positive_label : str
        Clinical meaning of label 1 for binary tasks (e.g. ``malignant``); the
        sensitivity and specificity are computed with respect to it.
    target_center, target_scale : float
        Regression targets are learnt as ``(y - center) / scale`` and predictions
        mapped back, so the loss is well scaled whatever the target's units; both
        are fixed by the federation, never fitted on one site's data.
    """

    kind: TaskKind
    num_classes: int = 2
    positive_label: str = "positive"
    target_center: float = 0.0
    target_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind is TaskKind.MULTICLASS and self.num_classes < 3:
            raise ValueError(f"a multiclass task needs >= 3 classes (got {self.num_classes})")
        if self.kind is TaskKind.SURVIVAL and self.num_classes < 2:
            raise ValueError(f"a survival task needs >= 2 time bins (got {self.num_classes})")
        if not self.target_scale > 0:
            raise ValueError(f"target_scale must be positive (got {self.target_scale})")

    @property
    def output_dim(self) -> int:
        """Width of the model's last layer (unused by reconstruction models)."""
        if self.kind in (TaskKind.MULTICLASS, TaskKind.SURVIVAL):
            return self.num_classes
        return 1

    @property
    def label_dtype(self) -> torch.dtype:
        """Dtype the loss expects for targets."""
        return torch.long if self.kind is TaskKind.MULTICLASS else torch.float32

    @property
    def stratified(self) -> bool:
        """Whether splits keep the balance of :meth:`strata` on both sides."""
        return self.kind in CLASSIFICATION or self.kind is TaskKind.SURVIVAL

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """What a split stratifies on: the class, or for survival the event flag."""
        return labels[:, 1] if self.kind is TaskKind.SURVIVAL else labels

    def targets(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """What the loss compares outputs with: the labels, or the input itself."""
        if self.kind is TaskKind.RECONSTRUCTION:
            return features
        if self.kind is TaskKind.REGRESSION:
            return ((labels - self.target_center) / self.target_scale).astype(np.float32)
        return labels

    def loss_fn(self) -> nn.Module:
        """Return the training loss (mean over the batch, as Opacus assumes)."""
        if self.kind in (TaskKind.BINARY, TaskKind.RECOMMENDATION):
            return _SqueezedLoss(nn.BCEWithLogitsLoss())
        if self.kind is TaskKind.MULTICLASS:
            return nn.CrossEntropyLoss()
        if self.kind is TaskKind.SURVIVAL:
            return DiscreteTimeSurvivalLoss()
        if self.kind is TaskKind.RECONSTRUCTION:
            return nn.MSELoss()
        return _SqueezedLoss(nn.MSELoss())

    def scores(self, outputs: torch.Tensor) -> np.ndarray:
        """Turn raw model outputs into what the metrics score.

        Returns
        -------
        np.ndarray
            Probabilities ``(n,)`` for binary (and the response probability for
            recommendation), ``(n, num_classes)`` for multiclass;
            predictions in the target's units for regression; a risk score ``(n,)``
            for survival (higher means earlier death); the reconstruction itself.
        """
        with torch.no_grad():
            if self.kind in (TaskKind.BINARY, TaskKind.RECOMMENDATION):
                return torch.sigmoid(outputs.squeeze(-1)).cpu().numpy()
            if self.kind is TaskKind.MULTICLASS:
                return torch.softmax(outputs, dim=-1).cpu().numpy()
            if self.kind is TaskKind.SURVIVAL:
                return survival_risk(outputs).cpu().numpy()
            if self.kind is TaskKind.RECONSTRUCTION:
                return outputs.cpu().numpy()
            predicted = outputs.squeeze(-1) * self.target_scale + self.target_center
            return predicted.cpu().numpy()


class _SqueezedLoss(nn.Module):
    """Apply a loss to ``(n, 1)`` outputs and ``(n,)`` targets."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(outputs.squeeze(-1), targets)


class DiscreteTimeSurvivalLoss(nn.Module):
    """Negative log-likelihood of a discrete-time hazard model, mean over patients.

    ``outputs[i, k]`` is the logit of patient ``i``'s hazard in time bin ``k``;
    ``targets[i]`` is (bin of death or censoring, event flag). A patient
    contributes every bin it was at risk in: survived bins before its own, and
    its own bin as a death (event) or a survival (censored).
    """

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bins = targets[:, 0].long()
        events = targets[:, 1]
        steps = torch.arange(outputs.shape[1], device=outputs.device)
        at_risk = (steps[None, :] <= bins[:, None]).to(outputs.dtype)
        died = (steps[None, :] == bins[:, None]).to(outputs.dtype) * events[:, None]
        per_bin = functional.binary_cross_entropy_with_logits(outputs, died, reduction="none")
        return (per_bin * at_risk).sum(dim=1).mean()


def survival_risk(outputs: torch.Tensor) -> torch.Tensor:
    """Risk score from hazard logits: minus the expected number of bins survived."""
    survival = torch.cumprod(1.0 - torch.sigmoid(outputs), dim=1)
    return -survival.sum(dim=1)
