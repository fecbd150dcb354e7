"""FedProx's proximal term, applied by the local optimiser after DP-SGD's privatisation.

FedProx (Li et al., 2020) adds ``mu / 2 * ||w - w_global||^2`` to each hospital's
local objective, so that local training on a skewed case mix cannot drift far
from the round's global model. Its gradient is ``mu * (w - w_global)``.

Why the optimiser and not the loss: DP-SGD bounds each *example's* gradient by
clipping it to ``max-grad-norm`` before the noise is added. Put into the per-
example loss, the proximal gradient would be part of every example's gradient,
clipped with it (distorting both terms) and summed once per example in the
batch. It needs none of that: it depends only on the current weights (already
DP outputs of earlier steps) and the global model the hospital received, never
on a patient. So :class:`ProximalSGD` adds it to the gradient Opacus has already
clipped, summed and noised, just before the SGD step: clipping still bounds
each example exactly as before, the noise and sampling are unchanged, and the
accountant's epsilon is the same as without the term (post-processing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class ProximalSGD(torch.optim.SGD):
    """Plain SGD whose gradient gains ``mu * (w - w_start)`` before every step.

    Parameters
    ----------
    params : Sequence[nn.Parameter]
        The parameters trained; their values now are the anchor ``w_start``
        (the global model of the round, as the hospital received it).
    lr : float
        Step size.
    mu : float
        Proximal coefficient; 0 is plain SGD.
    """

    def __init__(self, params: Sequence[nn.Parameter], lr: float, mu: float) -> None:
        super().__init__(params, lr=lr)
        self._mu = mu
        self._anchors = [parameter.detach().clone() for parameter in params]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Add the proximal gradient to each parameter's (privatised) gradient, then step."""
        if self._mu:
            for parameter, anchor in zip(self._trained(), self._anchors, strict=True):
                if parameter.grad is not None:
                    parameter.grad.add_(parameter - anchor, alpha=self._mu)
        loss: float | None = super().step(closure)
        return loss

    def _trained(self) -> list[torch.Tensor]:
        return [parameter for group in self.param_groups for parameter in group["params"]]


def local_optimizer(
    parameters: Sequence[nn.Parameter], *, learning_rate: float, proximal_mu: float
) -> torch.optim.SGD:
    """Return the hospital's local optimiser: SGD, with FedProx's pull when ``proximal_mu`` > 0."""
    if proximal_mu > 0:
        return ProximalSGD(parameters, lr=learning_rate, mu=proximal_mu)
    return torch.optim.SGD(parameters, lr=learning_rate)
