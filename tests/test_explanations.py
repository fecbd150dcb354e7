"""Integrated gradients checked against answers known in advance."""

import numpy as np
import pytest
import torch

from fedcare.client.model_use.explanations import (
    baseline,
    global_importance,
    integrated_gradients,
    per_feature,
)
from fedcare.shared.config.training import ModelName
from fedcare.shared.data import InputKind
from fedcare.shared.models import build_model
from fedcare.shared.tasks import Task, TaskKind

BINARY = Task(TaskKind.BINARY, positive_label="positive")


def test_a_linear_models_attributions_are_weight_times_input_difference() -> None:
    model = build_model(
        ModelName.LOGREG, input_shape=(5,), input_kind=InputKind.TABLE, task=BINARY, seed=1
    )
    inputs = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    found = integrated_gradients(model, inputs, BINARY, InputKind.TABLE)
    weights = model.weight.detach().numpy()[0]
    # The baseline of a standardised table row is all zeros: input - baseline = input.
    np.testing.assert_allclose(found, weights * inputs, rtol=1e-5, atol=1e-6)


def test_attributions_add_up_to_the_output_minus_the_baselines() -> None:
    model = build_model(
        ModelName.MLP, input_shape=(6,), input_kind=InputKind.TABLE, task=BINARY, seed=2
    )
    inputs = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    found = integrated_gradients(model, inputs, BINARY, InputKind.TABLE, steps=200)
    with torch.no_grad():
        gap = model(torch.from_numpy(inputs))[:, 0] - model(torch.zeros(5, 6))[:, 0]
    np.testing.assert_allclose(found.sum(axis=1), gap.numpy(), atol=2e-3)


def test_a_multiclass_model_is_explained_for_its_predicted_class() -> None:
    task = Task(TaskKind.MULTICLASS, num_classes=3)
    model = build_model(
        ModelName.LOGREG, input_shape=(4,), input_kind=InputKind.TABLE, task=task, seed=3
    )
    inputs = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    found = integrated_gradients(model, inputs, task, InputKind.TABLE)
    with torch.no_grad():
        predicted = model(torch.from_numpy(inputs)).argmax(dim=1).numpy()
    weights = model.weight.detach().numpy()
    np.testing.assert_allclose(found, weights[predicted] * inputs, rtol=1e-5, atol=1e-6)


def test_a_stays_padding_mask_gets_no_credit() -> None:
    model = build_model(
        ModelName.GRU, input_shape=(6, 3), input_kind=InputKind.SEQUENCES, task=BINARY, seed=4
    )
    inputs = np.random.default_rng(3).normal(size=(4, 6, 3)).astype(np.float32)
    inputs[..., -1] = 1.0
    inputs[:2, :3, :] = 0.0  # two stays left-padded by 3 steps
    found = integrated_gradients(model, inputs, BINARY, InputKind.SEQUENCES)
    assert np.all(found[..., -1] == 0.0)
    assert np.all(found[:2, :3, :] == 0.0)
    summed = per_feature(found, InputKind.SEQUENCES)
    assert summed.shape == (4, 2)
    reference = baseline(torch.from_numpy(inputs), InputKind.SEQUENCES)
    assert torch.equal(reference[..., -1], torch.from_numpy(inputs[..., -1]))


def test_image_maps_and_global_importance_have_the_image_size() -> None:
    task = Task(TaskKind.MULTICLASS, num_classes=3)
    model = build_model(
        ModelName.CNN, input_shape=(1, 16, 16), input_kind=InputKind.IMAGES, task=task, seed=5
    )
    images = np.random.default_rng(4).random((3, 1, 16, 16)).astype(np.float32)
    maps = per_feature(
        integrated_gradients(model, images, task, InputKind.IMAGES), InputKind.IMAGES
    )
    assert maps.shape == (3, 16, 16)
    importance = global_importance(maps)
    assert importance.shape == (16, 16) and np.all(importance >= 0)
    assert importance.mean() == pytest.approx(np.abs(maps).mean(), rel=1e-5)
