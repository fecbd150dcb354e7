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
        """Return what a split stratifies on: the class, or for survival the event flag."""
        return labels[:, 1] if self.kind is TaskKind.SURVIVAL else labels

    def targets(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Return what the loss compares outputs with: the labels, or the input itself."""
        if self.kind is TaskKind.RECONSTRUCTION:
            return features
        if self.kind is TaskKind.REGRESSION:
            return ((labels - self.target_center) / self.target_scale).astype(np.float32)
        return labels

    def loss_fn(self) -> PerExampleLoss:
        """Return the training loss: one loss per example, reduced as ``reduction`` says.

        Every loss honours ``reduction`` (``mean`` by default, ``sum`` or
        ``none``): Opacus' ghost clipping sets it to ``none`` and needs one loss
        per example to clip each example's gradient on its own.
        """
        if self.kind in (TaskKind.BINARY, TaskKind.RECOMMENDATION):
            return BinaryLoss()
        if self.kind is TaskKind.MULTICLASS:
            return MulticlassLoss()
        if self.kind is TaskKind.SURVIVAL:
            return DiscreteTimeSurvivalLoss()
        if self.kind is TaskKind.RECONSTRUCTION:
            return ReconstructionLoss()
        return RegressionLoss()

    def class_weighted_loss_fn(self, class_weights: torch.Tensor) -> PerExampleLoss:
        """Return the multiclass or binary loss with each class weighted by ``class_weights``.

        Each example's loss is multiplied by its class's weight, so the loss of one
        example still depends on that example alone (DP-SGD clips it on its own).
        """
        if self.kind in (TaskKind.BINARY, TaskKind.RECOMMENDATION):
            return BinaryLoss(class_weights)
        if self.kind is TaskKind.MULTICLASS:
            return MulticlassLoss(class_weights)
        raise ValueError(f"class weights need a classification task (got {self.kind})")

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


class PerExampleLoss(nn.Module):
    """A loss computed per example, then reduced by :attr:`reduction`.

    Subclasses implement :meth:`per_example`, returning ``(n,)``. ``reduction``
    is a plain attribute, as in torch's losses, so that Opacus' ghost clipping
    can switch it to ``none`` and receive one loss per example.
    """

    def __init__(self, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.reduction = "mean"
        self.class_weights = class_weights

    def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the ``(n,)`` losses of ``n`` examples."""
        raise NotImplementedError

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the per-example losses reduced as :attr:`reduction` says."""
        losses = self.per_example(outputs, targets)
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.mean()

    def _weighted(self, losses: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:
            return losses
        return losses * self.class_weights.to(losses.device)[classes.long()]


class BinaryLoss(PerExampleLoss):
    """Binary cross-entropy of ``(n, 1)`` logits against ``(n,)`` 0/1 targets."""

    def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return each example's binary cross-entropy (times its class weight)."""
        losses = functional.binary_cross_entropy_with_logits(
            outputs.squeeze(-1), targets, reduction="none"
        )
        return self._weighted(losses, targets)


class MulticlassLoss(PerExampleLoss):
    """Cross-entropy of ``(n, classes)`` logits against ``(n,)`` class indices."""

    def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return each example's cross-entropy (times its class weight)."""
        return self._weighted(functional.cross_entropy(outputs, targets, reduction="none"), targets)


class RegressionLoss(PerExampleLoss):
    """Squared error of ``(n, 1)`` predictions against ``(n,)`` scaled targets."""

    def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return each example's squared error."""
        return (outputs.squeeze(-1) - targets) ** 2


class ReconstructionLoss(PerExampleLoss):
    """Mean squared error over each example's values (its pixels), one loss per example."""

    def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return each example's mean squared error over its values."""
        return ((outputs - targets) ** 2).flatten(start_dim=1).mean(dim=1)


class DiscreteTimeSurvivalLoss(PerExampleLoss):
    """Negative log-likelihood of a discrete-time hazard model, one loss per patient.

    ``outputs[i, k]`` is the logit of patient ``i``'s hazard in time bin ``k``;
    ``targets[i]`` is (bin of death or censoring, event flag). A patient
    contributes every bin it was at risk in: survived bins before its own, and
    its own bin as a death (event) or a survival (censored).
    """

    def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return each patient's negative log-likelihood over the bins it was at risk in."""
        bins = targets[:, 0].long()
        events = targets[:, 1]
        steps = torch.arange(outputs.shape[1], device=outputs.device)
        at_risk = (steps[None, :] <= bins[:, None]).to(outputs.dtype)
        died = (steps[None, :] == bins[:, None]).to(outputs.dtype) * events[:, None]
        per_bin = functional.binary_cross_entropy_with_logits(outputs, died, reduction="none")
        return (per_bin * at_risk).sum(dim=1)


def survival_risk(outputs: torch.Tensor) -> torch.Tensor:
    """Risk score from hazard logits: minus the expected number of bins survived."""
    survival = torch.cumprod(1.0 - torch.sigmoid(outputs), dim=1)
    return -survival.sum(dim=1)
