"""Typed errors that say what is wrong and how to fix it."""

from __future__ import annotations


class FedcareError(Exception):
    """Base class of every error fedcare raises on purpose."""


class ConfigError(FedcareError, ValueError):
    """A setting is missing, unknown or outside its allowed range.

    Parameters
    ----------
    key : str
        The run-config key (kebab-case) of the offending setting.
    message : str
        One sentence naming the allowed values.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"setting '{key}': {message}")


class DataError(FedcareError, ValueError):
    """A hospital's data cannot be used as it is (never carries patient values)."""


class PrivacyBudgetExceededError(FedcareError, RuntimeError):
    """Training would push a hospital past its privacy budget; nothing was trained."""


class SiteTooSmallError(FedcareError, RuntimeError):
    """A site's DP-SGD noise would swamp anything it could learn; nothing was trained."""


class InvalidUpdateError(FedcareError, ValueError):
    """A model update is non-finite, mis-shaped or outside the range it may take."""


class RunStoppedError(FedcareError, RuntimeError):
    """The run stopped after a failed round, as ``on-failed-round = "stop"`` asks.

    Its message names the round, why it failed and how to resume.
    """
