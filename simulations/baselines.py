"""The two reference rows every simulation report shows beside the federated model.

* **pooled**: one model trained on every hospital's training rows together,
  without DP: what sharing all data centrally would give (and what fedcare exists
  to avoid).
* **local-only**: each hospital trains alone, for as many epochs as the whole
  federated run, under the *same* (epsilon, delta) budget; the report averages
  their test metrics over hospitals (over a seeded sample of 20 in a larger
  federation).

Both are scored on the same held-out test set as the federated model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedcare.client.training import train_plain, train_private
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.data import Examples
from fedcare.shared.errors import DataError
from fedcare.shared.evaluation import evaluate_model
from fedcare.shared.metrics import weighted_mean
from fedcare.shared.privacy import plan_dp_sgd
from fedcare.shared.run_model import RunModel, build_run_model, run_criterion, run_task
from fedcare.shared.tasks import Task
from fedcare.simulations.federation import SimulatedFederation, SimulatedHospital

POOLED = "pooled"
LOCAL_ONLY = "local_only"

LOCAL_ONLY_HOSPITALS = 20
"""Most hospitals the local-only row averages over (a seeded sample beyond that)."""


@dataclass(frozen=True)
class Baselines:
    """Test metrics of the reference models.

    Attributes
    ----------
    pooled : dict[str, float]
        Centralised, non-private model.
    local_only : dict[str, float]
        Mean over hospitals of each hospital's own DP model.
    local_only_per_hospital : dict[str, dict[str, float]]
        Each hospital's own DP model, by hospital name.
    """

    pooled: dict[str, float]
    local_only: dict[str, float]
    local_only_per_hospital: dict[str, dict[str, float]]

    def rows(self) -> dict[str, dict[str, float]]:
        """Return the report rows, by name."""
        return {POOLED: self.pooled, LOCAL_ONLY: self.local_only}


def compute_baselines(
    config: RunConfig, federation: SimulatedFederation, device: torch.device
) -> Baselines:
    """Train and score the pooled and local-only reference models.

    Raises
    ------
    DataError
        If the federation has no held-out test set to score them on.
    """
    test = federation.test
    if test is None:
        raise DataError(
            f"{config.data.dataset} has no held-out test set, so there are no baselines to score"
        )
    per_hospital = {
        hospital.name: _local_only(config, federation, test, hospital, device)
        for hospital in local_only_sample(federation.hospitals, seed=config.data.seed)
    }
    local_only = weighted_mean(list(per_hospital.values()), [1.0] * len(per_hospital))
    return Baselines(
        pooled=_pooled(config, federation, test, device),
        local_only=local_only,
        local_only_per_hospital=per_hospital,
    )


def local_only_sample(
    hospitals: Sequence[SimulatedHospital], *, seed: int
) -> list[SimulatedHospital]:
    """Return the hospitals whose local-only models are trained: all, or a seeded sample.

    The local-only row is a mean over hospitals; past :data:`LOCAL_ONLY_HOSPITALS`
    it is estimated from that many, drawn with the run's seed, because each costs
    a DP noise calibration and a whole run's worth of training (over a minute of
    CPU for 100 hospitals).
    """
    if len(hospitals) <= LOCAL_ONLY_HOSPITALS:
        return list(hospitals)
    chosen = np.random.default_rng(seed).choice(len(hospitals), LOCAL_ONLY_HOSPITALS, replace=False)
    return [hospitals[index] for index in sorted(chosen)]


def _total_epochs(config: RunConfig) -> int:
    return config.federation.rounds * config.training.local_epochs


def _task(config: RunConfig, federation: SimulatedFederation) -> Task:
    return run_task(config.training, federation.task)


def _fresh_model(config: RunConfig, federation: SimulatedFederation, test: Examples) -> RunModel:
    return build_run_model(
        config.training,
        input_shape=test.input_shape,
        input_kind=test.kind,
        task=_task(config, federation),
        seed=config.data.seed,
        private=config.privacy.enabled,
        party="the simulation's baselines",
    )


def _pooled(
    config: RunConfig, federation: SimulatedFederation, test: Examples, device: torch.device
) -> dict[str, float]:
    # Every hospital's training rows together, scaled as each hospital scaled them.
    pooled = Examples(
        features=np.concatenate([h.site.train.features for h in federation.hospitals]),
        labels=np.concatenate([h.site.train.labels for h in federation.hospitals]),
        feature_names=test.feature_names,
        kind=test.kind,
    )
    model = _fresh_model(config, federation, test).module
    task = _task(config, federation)
    train_plain(
        model,
        pooled,
        task,
        learning_rate=config.training.learning_rate,
        epochs=_total_epochs(config),
        batch_size=config.training.batch_size,
        seed=config.data.seed,
        device=device,
        criterion=run_criterion(config.training, task),
    )
    return evaluate_model(model, test, task, device).metrics


def _local_only(
    config: RunConfig,
    federation: SimulatedFederation,
    test: Examples,
    hospital: SimulatedHospital,
    device: torch.device,
) -> dict[str, float]:
    run_model = _fresh_model(config, federation, test)
    model = run_model.module
    train = hospital.site.train
    training = config.training
    criterion = run_criterion(training, _task(config, federation))
    if config.privacy.enabled:
        plan = plan_dp_sgd(
            n_samples=len(train),
            batch_size=training.batch_size,
            local_epochs=_total_epochs(config),
            rounds=1,
            target_epsilon=config.privacy.target_epsilon,
            delta=config.privacy.delta,
            # The same share of the budget is kept for evaluation as in the federation.
            evaluation_epsilon=config.privacy.evaluation_epsilon,
            evaluation_releases=config.privacy.evaluation_rounds,
        )
        train_private(
            model,
            train,
            _task(config, federation),
            plan=plan,
            max_grad_norm=config.privacy.max_grad_norm,
            learning_rate=training.learning_rate,
            epochs=_total_epochs(config),
            batch_size=training.batch_size,
            history=(),
            device=device,
            grad_sample_mode=run_model.grad_sample_mode,
            criterion=criterion,
        )
    else:
        train_plain(
            model,
            train,
            _task(config, federation),
            learning_rate=training.learning_rate,
            epochs=_total_epochs(config),
            batch_size=training.batch_size,
            seed=config.data.seed,
            device=device,
            criterion=criterion,
        )
    return evaluate_model(model, test, _task(config, federation), device).metrics
