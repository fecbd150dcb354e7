"""A hospital's own limits, checked against every instruction before anything is computed.

The aggregator proposes; the hospital decides. A run that asks for more epsilon or
a larger delta than the hospital accepts, that would send updates outside
SecAgg+ when the hospital requires it, or that asks for DP-SGD batches smaller
than the hospital accepts, is refused with a message saying which limit and how
the run would have to change. Training and evaluation requests are checked alike.
"""

from __future__ import annotations

from fedcare.client.site_settings import SitePrivacy
from fedcare.shared.config import RunConfig
from fedcare.shared.errors import PrivacyBudgetExceededError


class PolicyRefusal(PrivacyBudgetExceededError):
    """The run's settings break one of the hospital's own limits; nothing was trained."""


def check_policy(config: RunConfig, limits: SitePrivacy, *, site: str) -> None:
    """Refuse a run whose settings exceed the hospital's limits.

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
