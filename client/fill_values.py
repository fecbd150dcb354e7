"""A hospital's fill values for its empty cells in one run, DP ones booked before use.

Fills written in the contract are public and used as they are. A ``"dp-mean"``
fill (:mod:`shared.imputation`) is computed once per run from the hospital's
training rows with Gaussian noise, booked in its privacy ledger (write-ahead, as
every release is), and kept in its state folder (``fill-values/run-<id>.json``,
owner-only) so every later round of the run uses the same values. The run's
DP-SGD noise was planned with that release reserved (:func:`run_releases`), so
the fill and all training together stay within the run's epsilon. In a run with
DP turned off (which its report says loudly) the exact mean is used and nothing
is booked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcare.client.ledger import PrivacyLedger, ledger_path
from fedcare.client.local_parameters import run_file_stem
from fedcare.client.state_files import FILLS_DIR
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.contract import DataContract, Feature
from fedcare.shared.data import Examples, FillValues
from fedcare.shared.errors import DataError
from fedcare.shared.imputation import (
    dp_fill_features,
    dp_means,
    exact_means,
    fill_noise_multiplier,
    fill_release,
    public_fills,
)
from fedcare.shared.privacy import HistoryEntry
from fedcare.shared.private_files import make_private_directory, write_private

_DP_FILL_ROUND = 0
"""The round a run's DP fill release is booked under: it comes before round 1's training."""


def run_releases(contract: DataContract | None, config: RunConfig) -> tuple[HistoryEntry, ...]:
    """Return the releases a hospital makes in a run before it trains: its DP fill, if any.

    The run's DP-SGD plan reserves room for them (:func:`shared.privacy.plan_dp_sgd`).
    """
    if contract is None or not config.privacy.enabled or not dp_fill_features(contract.features):
        return ()
    noise = fill_noise_multiplier(config.privacy.target_epsilon, config.privacy.delta)
    return (fill_release(noise),)


@dataclass(frozen=True)
class BookingPlace:
    """Where a hospital books a run's DP fill: its state folder, its dataset's key and label."""

    state: Path
    ledger_key: str
    label: str
    run_id: str


def hospital_fills(
    contract: DataContract, config: RunConfig, place: BookingPlace, *, cap_epsilon: float
) -> FillValues:
    """Return what gives a hospital's fill values from its training rows, for one run.

    Parameters
    ----------
    contract : DataContract
        The federation's contract: which features are filled, and how.
    config : RunConfig
        The run: whether DP is on, its epsilon and delta.
    place : BookingPlace
        The hospital's state folder (its ledger, and the run's fill values), the
        dataset's ledger key and label, and the run the DP fill is booked for.
    cap_epsilon : float
        Epsilon the dataset may reach over all its releases.

    Returns
    -------
    FillValues
        Training rows to fill values (:func:`shared.data.prepare_site`).
    """
    features = dp_fill_features(contract.features)
    public = public_fills(contract.features)
    booked = _BookedFill(config, place, cap_epsilon)

    def fills(train: Examples) -> dict[str, float]:
        if not features:
            return public
        if not config.privacy.enabled:
            return public | exact_means(train, features)
        return public | booked.means(train, features)

    return fills


@dataclass(frozen=True)
class _BookedFill:
    """A run's DP fill values at one hospital: computed and booked once, then read back."""

    config: RunConfig
    place: BookingPlace
    cap: float

    def means(self, train: Examples, features: tuple[Feature, ...]) -> dict[str, float]:
        place = self.place
        path = place.state / FILLS_DIR / f"{run_file_stem(place.run_id)}.json"
        if path.is_file():
            return _stored(path)
        privacy = self.config.privacy
        noise = fill_noise_multiplier(privacy.target_epsilon, privacy.delta)
        values = dp_means(train, features, noise_multiplier=noise, rng=np.random.default_rng())
        with PrivacyLedger(ledger_path(place.state)) as ledger:
            # Booked as a release at sample rate 1 (the Gaussian mechanism, accounted
            # the same either way), not as an evaluation: the run's evaluation plan
            # counts only its own releases.
            reservation = ledger.reserve(
                place.ledger_key,
                label=place.label,
                run_id=place.run_id,
                server_round=_DP_FILL_ROUND,
                noise_multiplier=noise,
                sample_rate=1.0,
                steps=1,
                delta=privacy.delta,
                cap_epsilon=self.cap,
            )
            # Kept once booked: every round of the run fills with these same values.
            make_private_directory(path.parent)
            write_private(path, json.dumps(values).encode())
            ledger.confirm(reservation.id)
        return values


def _stored(path: Path) -> dict[str, float]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(
            f"the run's fill values in {path} cannot be read; the run cannot go on without "
            "booking them again, so start a new run"
        ) from None
    return {str(name): float(value) for name, value in values.items()}
