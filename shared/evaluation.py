"""Evaluate a model on examples: loss and the task's clinical metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedcare.shared.data import Examples
from fedcare.shared.metrics import compute_metrics
from fedcare.shared.tasks import Task, TaskKind

EVALUATION_BATCH = 256
"""Examples per forward pass: bounds memory for images and sequences."""


@dataclass(frozen=True)
class Evaluation:
    """The result of evaluating a model on ``num_examples`` examples."""

    loss: float
    metrics: dict[str, float]
    num_examples: int


@dataclass(frozen=True)
class Scores:
    """A model's scores on examples, with what they are scored against.

    Attributes
    ----------
    truth : np.ndarray
        What :func:`shared.metrics.compute_metrics` compares with: labels, the
        inputs (reconstruction) or each row's held-out treatment (recommendation).
    scores : np.ndarray
        :meth:`shared.tasks.Task.scores` output, or for recommendation every
        treatment's score per row (:func:`candidate_scores`).
    loss : float
        Mean loss over the examples.
    """

    truth: np.ndarray
    scores: np.ndarray
    loss: float


def evaluate_model(
    model: nn.Module,
    data: Examples,
    task: Task,
    device: torch.device,
    *,
    known: Examples | None = None,
) -> Evaluation:
    """Evaluate ``model`` on all of ``data``: mean loss and the task's metrics.

    Parameters
    ----------
    model : nn.Module
        The model to score.
    data : Examples
        The evaluation rows.
    task : Task
        What the model learnt.
    device : torch.device
        Where to run it.
    known : Examples | None
        For recommendation, the interactions the model was trained on (the
        training split): they are no candidates when ranking a patient's
        treatments. Unused by every other task.

    Raises
    ------
    ValueError
        If a recommendation is evaluated without ``known``.
    """
    scored = score_model(model, data, task, device, known=known)
    metrics = compute_metrics(task, scored.truth, scored.scores)
    return Evaluation(loss=scored.loss, metrics=metrics, num_examples=len(data))


def score_model(
    model: nn.Module,
    data: Examples,
    task: Task,
    device: torch.device,
    *,
    known: Examples | None = None,
) -> Scores:
    """Score ``model`` on all of ``data`` (see :func:`evaluate_model` for the parameters).

    Raises
    ------
    ValueError
        If a recommendation is scored without ``known``.
    """
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
    loss = weighted_loss / max(len(data), 1)
    if task.kind is TaskKind.RECOMMENDATION:
        if known is None:
            raise ValueError("ranking treatments needs the known (training) interactions")
        scores = candidate_scores(model, data, known, device)
        return Scores(truth=data.features[:, 1], scores=scores, loss=loss)
    truth = data.features if task.kind is TaskKind.RECONSTRUCTION else data.labels
    return Scores(truth=np.asarray(truth), scores=task.scores(torch.cat(outputs)), loss=loss)


def candidate_scores(
    model: nn.Module, data: Examples, known: Examples, device: torch.device
) -> np.ndarray:
    """Score every treatment for the patient of each of ``data``'s interactions.

    Returns
    -------
    np.ndarray
        ``(len(data), treatments)`` response logits; ``-inf`` for the treatments
        the patient has in ``known`` (already tried, so nothing to recommend),
        except the row's own treatment, which is always a candidate.
    """
    treatments = len(data.feature_names)
    patients = data.features[:, 0]
    pairs = np.stack(
        [np.repeat(patients, treatments), np.tile(np.arange(treatments), len(data))], axis=1
    )
    pair_logits = np.empty(len(pairs), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(pairs), EVALUATION_BATCH):
            batch = torch.from_numpy(pairs[start : start + EVALUATION_BATCH]).to(device)
            pair_logits[start : start + EVALUATION_BATCH] = model(batch).squeeze(-1).cpu().numpy()
    logits = pair_logits.reshape(len(data), treatments)
    tried = np.zeros((max(data.patients, known.patients), treatments), dtype=bool)
    tried[known.features[:, 0], known.features[:, 1]] = True
    scores = np.where(tried[patients], -np.inf, logits)
    rows = np.arange(len(data))
    scores[rows, data.features[:, 1]] = logits[rows, data.features[:, 1]]
    return scores
