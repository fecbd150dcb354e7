"""FedProx: the proximal term changes each DP-SGD step as expected and leaves epsilon unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcare.client.proximal import ProximalSGD, local_optimizer
from fedcare.client.training import train_private
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.data import Examples
from fedcare.shared.errors import ConfigError
from fedcare.shared.privacy import epsilon_spent, plan_dp_sgd
from fedcare.shared.tasks import Task, TaskKind

CLIP = 0.1
LR = 0.5
MU = 2.0


def test_a_proximal_step_adds_mu_times_the_distance_from_the_start() -> None:
    weight = nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = ProximalSGD([weight], lr=0.1, mu=0.5)
    with torch.no_grad():
        weight.copy_(torch.tensor([2.0, 0.0]))  # where local training got to
    weight.grad = torch.tensor([0.5, 0.5])
    optimizer.step()
    # w - lr * (g + mu * (w - w_start)) = [2 - 0.1 * (0.5 + 0.5), 0 - 0.1 * (0.5 - 1.0)]
    torch.testing.assert_close(weight.detach(), torch.tensor([1.9, 0.05]))


def test_mu_zero_is_plain_sgd() -> None:
    optimizer = local_optimizer([nn.Parameter(torch.zeros(2))], learning_rate=0.1, proximal_mu=0)
    assert type(optimizer) is torch.optim.SGD


def _clipped_mean_gradient(model: nn.Linear, features: torch.Tensor, targets: torch.Tensor):  # type: ignore[no-untyped-def]
    """Mean of the per-example gradients, each clipped to CLIP (DP-SGD without noise)."""
    summed = [torch.zeros_like(p) for p in model.parameters()]
    for x, y in zip(features, targets, strict=True):
        model.zero_grad()
        ((model(x[None]) - y) ** 2).sum().backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]  # type: ignore[union-attr]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        for total, g in zip(summed, grads, strict=True):
            total += g * min(1.0, CLIP / float(norm))
    return [total / len(features) for total in summed]


def test_under_dp_sgd_the_term_joins_after_clipping() -> None:
    """One Opacus step = lr x (clipped data gradient + unclipped proximal pull).

    Noise is off so the step is exact; the clipping, done per example by Opacus,
    bounds the patients' contribution exactly as without FedProx.
    """
    torch.manual_seed(0)
    features, targets = torch.randn(8, 3), torch.randn(8, 1)
    model = nn.Linear(3, 1)
    optimizer = ProximalSGD(list(model.parameters()), lr=LR, mu=MU)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)  # as if earlier steps had moved it
    moved = [p.detach().clone() for p in model.parameters()]
    expected_data = _clipped_mean_gradient(model, features, targets)
    loader = DataLoader(TensorDataset(features, targets), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private, dp_optimizer, private_loader = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=0.0,
            max_grad_norm=CLIP,
            poisson_sampling=False,
        )
        x, y = next(iter(private_loader))
        dp_optimizer.zero_grad()
        nn.functional.mse_loss(private(x), y).backward()
        dp_optimizer.step()
    for after, before, origin, data in zip(
        model.parameters(), moved, start, expected_data, strict=True
    ):
        expected = before - LR * (data + MU * (before - origin))
        torch.testing.assert_close(after.detach(), expected)


def _train(mu: float, mode: str) -> tuple[list[np.ndarray], float, tuple]:  # type: ignore[type-arg]
    rng = np.random.default_rng(1)
    data = Examples(
        features=rng.normal(size=(96, 4)).astype(np.float32),
        labels=rng.integers(0, 2, size=96),
        feature_names=tuple("abcd"),
    )
    plan = plan_dp_sgd(
        n_samples=96, batch_size=16, local_epochs=2, rounds=3, target_epsilon=3.0, delta=1e-5
    )
    torch.manual_seed(7)
    model = nn.Linear(4, 1)
    start = [p.detach().clone() for p in model.parameters()]
    outcome = train_private(
        model,
        data,
        Task(TaskKind.BINARY),
        plan=plan,
        max_grad_norm=1.0,
        learning_rate=0.5,
        epochs=2,
        batch_size=16,
        history=[],
        device=torch.device("cpu"),
        proximal_mu=mu,
        grad_sample_mode=mode,
    )
    drift = float(
        sum(((p.detach() - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True))
    )
    return [p.detach().numpy() for p in model.parameters()], drift, outcome.history


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_fedprox_keeps_epsilon_and_pulls_training_towards_the_global_model(mode: str) -> None:
    plain_weights, plain_drift, plain_history = _train(0.0, mode)
    prox_weights, prox_drift, prox_history = _train(1.0, mode)
    # Same seed: the same Poisson batches and noise draws; only the pull differs.
    assert prox_history == plain_history
    assert epsilon_spent(prox_history, delta=1e-5) == epsilon_spent(plain_history, delta=1e-5)
    assert not all(np.array_equal(a, b) for a, b in zip(plain_weights, prox_weights, strict=True))
    assert prox_drift < plain_drift


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"proximal-mu": -0.1}, "must be a finite number >= 0"),
        ({"proximal-mu": 2.0, "learning-rate": 0.5}, "overshoots"),
    ],
)
def test_a_bad_mu_is_refused_by_name(settings: dict[str, float], says: str) -> None:
    with pytest.raises(ConfigError, match="proximal-mu") as refused:
        RunConfig.from_flat(settings)
    assert says in str(refused.value)
