"""Server optimisers: FedAdam, FedYogi and FedAdagrad on the round's mean update.

Reddi et al. (2021, "Adaptive Federated Optimization", Algorithm 2) treat the
mean of the hospitals' updates ``delta`` as a pseudo-gradient and keep
per-parameter moments across rounds::

    m = beta1 * m + (1 - beta1) * delta
    v = v + delta**2                                         # FedAdagrad
    v = v - (1 - beta2) * delta**2 * sign(v - delta**2)      # FedYogi
    v = beta2 * v + (1 - beta2) * delta**2                   # FedAdam
    w = w + eta * m / (sqrt(v) + tau)

Both moments start at zero. FedAdam corrects their bias at step ``t`` (1 for
the first update) as Kingma & Ba do: ``eta * sqrt(1 - beta2**t) / (1 - beta1**t)``.
(Flower's ``FedAdam`` uses the round number + 1 as ``t``, and its ``FedAdagrad``
has no momentum; here every optimiser takes ``beta1``, as the paper's do, and
``t`` counts applied updates, so a resumed run continues the same sequence.)

Only the mean update is needed, which is all SecAgg+ lets the aggregator see;
and the step is post-processing of the hospitals' DP-SGD releases, so it costs
no privacy. Pure numpy: the policy comes in, nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedcare.shared.config.server_optimizer import ServerOptimizerName, ServerOptimizerSettings

Arrays = tuple[NDArray[Any], ...]

FIRST_MOMENT = "first-moment"
SECOND_MOMENT = "second-moment"


@dataclass(frozen=True)
class OptimizerState:
    """What a server optimiser carries from one round to the next.

    Attributes
    ----------
    step : int
        Updates applied so far (0 before the first).
    first_moment, second_moment : tuple of arrays
        One array per model parameter, in the model's order; empty before the
        first update and for ``none``.
    """

    step: int = 0
    first_moment: Arrays = ()
    second_moment: Arrays = ()

    def to_tensors(self, names: Sequence[str]) -> dict[str, NDArray[Any]]:
        """Return the moments as named tensors (``first-moment/<parameter>``, ...)."""
        return {
            f"{kind}/{name}": array
            for kind, moment in (
                (FIRST_MOMENT, self.first_moment),
                (SECOND_MOMENT, self.second_moment),
            )
            for name, array in zip(names, moment, strict=True)
        }

    @classmethod
    def from_tensors(
        cls, step: int, tensors: dict[str, NDArray[Any]], names: Sequence[str]
    ) -> OptimizerState:
        """Rebuild a state from :meth:`to_tensors`' output.

        Raises
        ------
        KeyError
            If a parameter's moment is missing.
        """
        first = tuple(tensors[f"{FIRST_MOMENT}/{name}"] for name in names)
        second = tuple(tensors[f"{SECOND_MOMENT}/{name}"] for name in names)
        return cls(step=step, first_moment=first, second_moment=second)


def apply_server_update(
    policy: ServerOptimizerSettings,
    state: OptimizerState,
    weights: Sequence[NDArray[Any]],
    mean_delta: Sequence[NDArray[Any]],
) -> tuple[list[NDArray[Any]], OptimizerState]:
    """Apply one round's mean update to the global model.

    Parameters
    ----------
    policy : ServerOptimizerSettings
        Which optimiser, and its learning rate, betas and tau.
    state : OptimizerState
        The state after the previous update (``OptimizerState()`` at the start).
    weights : Sequence of arrays
        The current global model.
    mean_delta : Sequence of arrays
        The hospitals' (row-weighted) mean update, same shapes as ``weights``.

    Returns
    -------
    tuple[list of arrays, OptimizerState]
        The new global model and the state to pass to the next update.
    """
    step = state.step + 1
    if policy.optimizer is ServerOptimizerName.NONE:
        return [w + d for w, d in zip(weights, mean_delta, strict=True)], OptimizerState(step)
    first = state.first_moment or tuple(np.zeros_like(d) for d in mean_delta)
    second = state.second_moment or tuple(np.zeros_like(d) for d in mean_delta)
    first = tuple(
        policy.beta1 * m + (1.0 - policy.beta1) * d for m, d in zip(first, mean_delta, strict=True)
    )
    second = tuple(_second_moment(policy, v, d) for v, d in zip(second, mean_delta, strict=True))
    rate = _step_size(policy, step)
    updated = [
        w + rate * m / (np.sqrt(v) + policy.tau)
        for w, m, v in zip(weights, first, second, strict=True)
    ]
    return updated, OptimizerState(step, first, second)


def _second_moment(
    policy: ServerOptimizerSettings, v: NDArray[Any], d: NDArray[Any]
) -> NDArray[Any]:
    squared: NDArray[Any] = d * d
    if policy.optimizer is ServerOptimizerName.FEDADAGRAD:
        summed: NDArray[Any] = v + squared
        return summed
    if policy.optimizer is ServerOptimizerName.FEDYOGI:
        # Yogi moves v towards delta**2 by a fixed share of delta**2: it cannot
        # shrink as fast as Adam's, so one noisy round does not inflate the step.
        yogi: NDArray[Any] = v - (1.0 - policy.beta2) * squared * np.sign(v - squared)
        return yogi
    adam: NDArray[Any] = policy.beta2 * v + (1.0 - policy.beta2) * squared
    return adam


def _step_size(policy: ServerOptimizerSettings, step: int) -> float:
    """Return eta, bias-corrected for FedAdam at update ``step`` (1-based)."""
    if policy.optimizer is not ServerOptimizerName.FEDADAM:
        return policy.learning_rate
    correction = np.sqrt(1.0 - policy.beta2**step) / (1.0 - policy.beta1**step)
    return float(policy.learning_rate * correction)
