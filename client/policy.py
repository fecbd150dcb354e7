"""A hospital's own limits, checked against every instruction before anything is computed.

The aggregator proposes; the hospital decides. :func:`check_run` is the one place
that decides, for training and evaluation requests alike: the hospital's privacy
limits (``[privacy]``: DP and SecAgg+ required, epsilon and delta caps, checked
by :func:`check_policy`), then its run policy (``[policy]``: models, epsilon per
run, rounds, local epochs, evaluation), then its approval list. A refusal says
which limit and how the run would have to change; it never names a path or a
patient count.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcare.client.site_policy import SitePolicy
from fedcare.client.site_settings import SitePrivacy
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import FedcareError, PrivacyBudgetExceededError


class PolicyRefusal(PrivacyBudgetExceededError):
    """The run's settings break one of the hospital's own limits; nothing was trained."""


class RunRefused(FedcareError):
    """The run is outside the hospital's run policy, or not approved; nothing was trained."""


@dataclass(frozen=True)
class RunRequest:
    """What one message asks of the hospital, as its policy sees it.

    Attributes
    ----------
    config : RunConfig
        The run's configuration.
    config_hash : str
        Its :func:`shared.run_identity.run_config_hash`.
    evaluation : bool
        Whether the message asks for an evaluation (else it is part of training).
    evaluations_done : int
        Evaluation requests of this run the hospital has already answered.
    """

    config: RunConfig
    config_hash: str
    evaluation: bool = False
    evaluations_done: int = 0


def check_run(request: RunRequest, policy: SitePolicy, limits: SitePrivacy, *, site: str) -> None:
    """Refuse a request the hospital's limits, policy or approvals do not allow.

    Raises
    ------
    PolicyRefusal
        If the run breaks a privacy limit.
    RunRefused
        If it breaks the run policy or is not approved.
    """
    check_policy(request.config, limits, site=site)
    for problem in _policy_problems(request, policy):
        raise RunRefused(f"{site} refuses: {problem}")
    if policy.require_approval and request.config_hash not in policy.approved:
        raise RunRefused(
            f"{site} refuses: it takes part only in approved runs and has not approved run "
            f"configuration {request.config_hash}; send it this hash to approve with "
            "`fedcare hospital approve HASH`"
        )


def _policy_problems(request: RunRequest, policy: SitePolicy) -> list[str]:
    config = request.config
    problems = []
    if policy.models is not None and config.training.model not in policy.models:
        allowed = ", ".join(sorted(policy.models))
        problems.append(f"it does not train model '{config.training.model}' (allowed: {allowed})")
    cap = policy.max_epsilon_per_run
    if cap is not None and config.privacy.target_epsilon > cap:
        problems.append(
            f"the run asks for epsilon {config.privacy.target_epsilon:g}, above its per-run "
            f"limit of {cap:g}; rerun with --epsilon {cap:g} or less"
        )
    if policy.max_rounds is not None and config.federation.rounds > policy.max_rounds:
        problems.append(
            f"the run has {config.federation.rounds} rounds, above its limit of "
            f"{policy.max_rounds}; rerun with --rounds {policy.max_rounds} or fewer"
        )
    epochs = config.training.local_epochs
    if policy.max_local_epochs is not None and epochs > policy.max_local_epochs:
        problems.append(
            f"the run asks for {epochs} local epochs, above its limit of "
            f"{policy.max_local_epochs}; rerun with --set local-epochs={policy.max_local_epochs}"
        )
    if request.evaluation:
        problems += _evaluation_problems(request.evaluations_done, policy)
    return problems


def _evaluation_problems(done: int, policy: SitePolicy) -> list[str]:
    if not policy.allow_evaluation:
        return ["it does not evaluate models on its data"]
    if policy.max_evaluations is not None and done >= policy.max_evaluations:
        return [f"it answers at most {policy.max_evaluations} evaluation requests per run"]
    return []


def check_policy(config: RunConfig, limits: SitePrivacy, *, site: str) -> None:
    """Refuse a run whose settings exceed the hospital's privacy limits.

    Raises
    ------
    PolicyRefusal
        Naming the limit, the hospital's value and the run's.
    """
    if limits.require_secure_aggregation and not config.secure_aggregation.enabled:
        raise PolicyRefusal(
            f"{site} refuses: it requires secure aggregation and this run turned it off"
        )
    if not config.privacy.enabled:
        raise PolicyRefusal(f"{site} refuses: this run turned differential privacy off")
    if config.privacy.target_epsilon > limits.max_epsilon:
        raise PolicyRefusal(
            f"{site} refuses: the run asks for epsilon {config.privacy.target_epsilon:g}, "
            f"above the hospital's limit of {limits.max_epsilon:g}; rerun with --epsilon "
            f"{limits.max_epsilon:g} or less"
        )
    if config.training.batch_size < limits.min_batch_size:
        raise PolicyRefusal(
            f"{site} refuses: the run asks for DP-SGD batches of {config.training.batch_size}, "
            f"below the hospital's min-batch-size of {limits.min_batch_size}; rerun with "
            f"--set batch-size={limits.min_batch_size} or more"
        )
    if config.privacy.delta > limits.delta:
        raise PolicyRefusal(
            f"{site} refuses: the run asks for delta {config.privacy.delta:g}, above the "
            f"hospital's limit of {limits.delta:g}; rerun with --delta {limits.delta:g} or less"
        )
