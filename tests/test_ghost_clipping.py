"""Ghost clipping clips each example on its own with every fedcare loss, and every model
and grad-sample mode survives the empty batches Poisson sampling draws."""

import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcare.client.training import _step_without_examples, trainable_parameters
from fedcare.shared.config.training import ModelName
from fedcare.shared.data import InputKind
from fedcare.shared.models import MODELS, build_model
from fedcare.shared.tasks import PerExampleLoss, Task, TaskKind

CLIP = 0.5
BATCH = 6

CASES = {
    "binary": (ModelName.MLP, Task(TaskKind.BINARY), (5,), InputKind.TABLE),
    "binary-weighted": (ModelName.MLP, Task(TaskKind.BINARY), (5,), InputKind.TABLE),
    "multiclass": (
        ModelName.CNN,
        Task(TaskKind.MULTICLASS, num_classes=3),
        (1, 8, 8),
        InputKind.IMAGES,
    ),
    "multiclass-weighted": (
        ModelName.MLP,
        Task(TaskKind.MULTICLASS, num_classes=3),
        (5,),
        InputKind.TABLE,
    ),
    "regression": (ModelName.MLP, Task(TaskKind.REGRESSION), (5,), InputKind.TABLE),
    "survival": (ModelName.MLP, Task(TaskKind.SURVIVAL, num_classes=4), (5,), InputKind.TABLE),
    "reconstruction": (
        ModelName.AUTOENCODER,
        Task(TaskKind.RECONSTRUCTION),
        (1, 8, 8),
        InputKind.IMAGES,
    ),
    "recommendation": (
        ModelName.NCF,
        Task(TaskKind.RECOMMENDATION),
        (7, 5),
        InputKind.INTERACTIONS,
    ),
}


def _inputs(
    task: Task, shape: tuple[int, ...], kind: InputKind
) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    if kind is InputKind.INTERACTIONS:
        features = np.stack([rng.integers(0, shape[0], BATCH), rng.integers(0, shape[1], BATCH)], 1)
    else:
        features = rng.normal(size=(BATCH, *shape)).astype(np.float32) * 3
        if kind is InputKind.IMAGES:
            features = np.abs(features) / 10
    if task.kind is TaskKind.SURVIVAL:
        labels = np.stack([rng.integers(0, 4, BATCH), rng.integers(0, 2, BATCH)], 1)
    elif task.kind is TaskKind.MULTICLASS:
        labels = rng.integers(0, 3, BATCH)
    else:
        labels = rng.integers(0, 2, BATCH)
    targets = task.targets(
        features, labels.astype(np.float32 if task.label_dtype is torch.float32 else np.int64)
    )
    return torch.as_tensor(features), torch.as_tensor(targets, dtype=task.label_dtype)


def _criterion(case: str, task: Task) -> PerExampleLoss:
    if case.endswith("-weighted"):
        return task.class_weighted_loss_fn(torch.linspace(0.5, 2.0, task.num_classes))
    return task.loss_fn()


def _model(case: str) -> nn.Module:
    name, task, shape, kind = CASES[case]
    return build_model(name, input_shape=shape, input_kind=kind, task=task, seed=3).train()


def _per_example_reference(
    case: str, features: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """DP-SGD's noiseless update at learning rate 1, computed one example at a time."""
    model = _model(case)
    criterion = _criterion(case, CASES[case][1])
    total = torch.zeros(sum(p.numel() for p in model.parameters()))
    for row in range(len(features)):
        model.zero_grad()
        criterion(model(features[row : row + 1]), targets[row : row + 1]).backward()
        grad = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                for p in model.parameters()
            ]
        )
        total += (CLIP / (grad.norm() + 1e-6)).clamp(max=1.0) * grad
    return -total / len(features)


def _private(
    model: nn.Module,
    criterion: PerExampleLoss,
    features: torch.Tensor,
    targets: torch.Tensor,
    mode: str,
    noise: float = 0.0,
):
    loader = DataLoader(TensorDataset(features, targets), batch_size=BATCH)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=CLIP,
            poisson_sampling=False,
            grad_sample_mode=mode,
        )
    if mode == "ghost":
        return made[0], made[1], made[2]
    return made[0], made[1], criterion


@pytest.mark.parametrize("case", CASES)
def test_ghost_clipping_matches_per_example_clipping(case: str) -> None:
    features, targets = _inputs(*CASES[case][1:])
    reference = _per_example_reference(case, features, targets)
    model = _model(case)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    private, optimizer, criterion = _private(
        model, _criterion(case, CASES[case][1]), features, targets, "ghost"
    )
    optimizer.zero_grad()
    criterion(private(features), targets).backward()
    optimizer.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    error = float((after - before - reference).norm() / reference.norm())
    assert error < 1e-4, f"{case}: ghost clipping is {error:.2g} off per-example clipping"


def test_a_batch_mean_loss_would_have_been_caught() -> None:
    """The check above fails a loss that ignores ``reduction`` (the bug it guards against)."""

    class BatchMean(PerExampleLoss):
        def per_example(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return Task(TaskKind.BINARY).loss_fn()(outputs, targets).expand(len(targets))

    case = "binary"
    features, targets = _inputs(*CASES[case][1:])
    reference = _per_example_reference(case, features, targets)
    model = _model(case)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    private, optimizer, criterion = _private(model, BatchMean(), features, targets, "ghost")
    optimizer.zero_grad()
    criterion(private(features), targets).backward()
    optimizer.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before - reference).norm() / reference.norm()) > 1e-2


def _shape_for(name: ModelName) -> tuple[tuple[int, ...], InputKind, Task]:
    kind = min(MODELS[name].inputs)
    shapes = {
        InputKind.TABLE: (5,),
        InputKind.IMAGES: (1, 28, 28),
        InputKind.SEQUENCES: (6, 4),
        InputKind.INTERACTIONS: (7, 5),
    }
    task = Task(TaskKind.RECONSTRUCTION) if MODELS[name].reconstructs else Task(TaskKind.BINARY)
    return shapes[kind], kind, task


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ghost"])
@pytest.mark.parametrize("name", [n for n in ModelName if n is not ModelName.RESNET18])
def test_every_model_and_mode_takes_an_empty_poisson_batch(name: ModelName, mode: str) -> None:
    shape, kind, task = _shape_for(name)
    model = build_model(name, input_shape=shape, input_kind=kind, task=task, seed=0).train()
    features, targets = (
        _inputs(task, shape, kind)
        if kind is not InputKind.SEQUENCES
        else (torch.zeros((BATCH, *shape)), torch.zeros(BATCH))
    )
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    _, optimizer, _ = _private(model, task.loss_fn(), features, targets, mode, noise=1.0)
    optimizer.zero_grad()
    _step_without_examples(optimizer)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    # The step happened: pure noise moved every parameter.
    assert torch.isfinite(after).all() and not torch.equal(after, before)


def test_class_weights_are_public_run_settings_one_per_class() -> None:
    from fedcare.shared.config.run_config import RunConfig
    from fedcare.shared.errors import ConfigError
    from fedcare.shared.run_model import run_criterion

    training = RunConfig.from_flat({"class-weights": "1.0,3.0"}).training
    weighted = run_criterion(training, Task(TaskKind.BINARY))
    outputs, targets = torch.zeros(2, 1), torch.tensor([0.0, 1.0])
    weighted.reduction = "none"
    losses = weighted(outputs, targets)
    assert float(losses[1] / losses[0]) == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="one weight per class"):
        run_criterion(training, Task(TaskKind.MULTICLASS, num_classes=3))
    with pytest.raises(ConfigError, match="class-weights"):
        RunConfig.from_flat({"class-weights": "1,-2"})


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 8, kernel_size=3, padding=1),  # many positions: per-example gradients
        nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False),  # few: Gram matrices
        nn.Conv2d(4, 4, kernel_size=3, padding=1, groups=2),  # grouped: Opacus' own
    ],
)
def test_fedcares_conv_ghost_norms_equal_per_example_gradient_norms(conv: nn.Conv2d) -> None:
    from opacus.grad_sample.conv import compute_conv_grad_sample

    from fedcare.client.conv_ghost_norm import conv2d_norm_sample

    torch.manual_seed(0)
    inputs = torch.randn(5, conv.in_channels, 6, 6)
    backprops = torch.randn_like(conv(inputs))
    norms = conv2d_norm_sample(conv, [inputs], backprops)
    for parameter, samples in compute_conv_grad_sample(conv, [inputs], backprops).items():
        expected = samples.flatten(start_dim=1).norm(dim=-1)
        assert torch.allclose(norms[parameter], expected, rtol=1e-4, atol=1e-5)
