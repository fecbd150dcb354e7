"""One hospital's training round, as plain functions that know nothing of Flower.

:func:`train_round` runs DP-SGD from the global model and returns the *delta* to
send. Before training it applies the hospital's policy and refuses a round that
would take the run past its target epsilon (keeping the share of the
evaluations still owed, :mod:`client.budget`), or the dataset's whole history
(every run, from the privacy ledger) past the hospital's cap; after training it
refuses to release an update that is non-finite or outside SecAgg+'s range, and
it records the release in the ledger *before* handing the update over
(write-ahead). The training loss of a DP run never leaves: it would be an exact
statistic of the batches. Evaluation is :mod:`client.evaluation_round`. A
model's site-local parameters (patient embeddings) come from and go back to the
hospital's state folder (:mod:`client.local_parameters`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedcare.client.budget import (
    check_budget,
    check_dataset_budget,
    dataset_cap,
    owed_releases,
    privacy_plan,
    run_entries,
    spent_metrics,
)
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.ledger_records import Reservation
from fedcare.client.local_parameters import load_local_parameters, save_local_parameters
from fedcare.client.policy import check_policy
from fedcare.client.site import Site
from fedcare.client.training import TrainOutcome, train_plain, train_private
from fedcare.client.warm_cache import RUN_CACHE
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.device import resolve_device
from fedcare.shared.errors import InvalidUpdateError
from fedcare.shared.keys import InstructionKey, ReplyKey
from fedcare.shared.privacy import DpSgdPlan, HistoryEntry, check_noise
from fedcare.shared.run_model import RunModel, build_run_model, run_criterion
from fedcare.shared.serialization import get_weights, set_weights

ReplyMetrics = dict[str, bool | int | float | str]


@dataclass(frozen=True)
class RoundUpdate:
    """What a hospital releases after training, and the privacy history it must keep.

    Attributes
    ----------
    delta : list[np.ndarray]
        ``local - global`` for every parameter.
    num_examples : int
        Training rows (the aggregation weight).
    metrics : ReplyMetrics
        Aggregate scalars: hospital name, DP mechanism, epsilon spent (and the
        training loss, only when DP is off).
    plan : DpSgdPlan | None
        The DP-SGD plan used (to reuse next round); ``None`` without DP.
    reservation : int | None
        The ledger entry recording this release (``None`` without DP).
    """

    delta: list[np.ndarray]
    num_examples: int
    metrics: ReplyMetrics
    plan: DpSgdPlan | None
    reservation: int | None = None

    @property
    def reservations(self) -> tuple[int, ...]:
        """Return every ledger entry this update releases."""
        return () if self.reservation is None else (self.reservation,)


def parse_instruction(instruction: Mapping[str, FlatValue]) -> RunConfig:
    """Parse the run config the aggregator sent with an instruction."""
    return RunConfig.from_flat(
        {k: v for k, v in instruction.items() if k != InstructionKey.SERVER_ROUND}
    )


def train_round(  # noqa: PLR0913 - the round's inputs, each needed
    global_weights: Sequence[np.ndarray],
    config: RunConfig,
    site: Site,
    *,
    plan: DpSgdPlan | None,
    ledger: PrivacyLedger,
    run_id: str,
    server_round: int,
) -> RoundUpdate:
    """Train one round from ``global_weights`` and return the update to release.

    The DP-SGD plan is calibrated at the first round and passed back in after, so
    the noise stays what the whole-run budget was calibrated for. The release is
    in the ledger before this returns, and only then are the model's site-local
    parameters written back for the next round.

    Raises
    ------
    PrivacyBudgetExceededError
        If the run breaks the hospital's policy or the round would overspend;
        nothing is trained.
    InvalidUpdateError
        If the global model is malformed, or the update could not be sent safely.
    """
    if site.limits is not None:
        check_policy(config, site.limits, site=site.name)
    run_model = global_model(global_weights, config, site, run_id)
    if not config.privacy.enabled:
        return _train_without_dp(run_model.module, global_weights, config, site, run_id)
    plan = plan or privacy_plan(config, site)
    history, cap = _check_round_budget(config, plan, ledger, site, run_id)
    outcome = private_local_training(
        run_model, config, site, plan, history, proximal_mu=config.training.proximal_mu
    )
    delta = _checked_delta(run_model.module, global_weights, config, site)
    reservation = reserve_training(
        ledger, site, plan, steps=outcome.steps, run_id=run_id, server_round=server_round, cap=cap
    )
    # Kept only once the release is booked: later rounds build on these values,
    # so they must come from spending the ledger has counted.
    save_local_parameters(run_model.module, site.state, run_id)
    return RoundUpdate(
        delta=delta,
        num_examples=len(site.data.train),
        metrics=_dp_reply_metrics(ledger, site, run_id, plan, reservation, outcome.steps),
        plan=plan,
        reservation=reservation.id,
    )


def private_local_training(  # noqa: PLR0913 - the model, the run, the site and its privacy
    run_model: RunModel,
    config: RunConfig,
    site: Site,
    plan: DpSgdPlan,
    history: Sequence[HistoryEntry],
    *,
    proximal_mu: float = 0.0,
) -> TrainOutcome:
    """Train the model's trainable parameters on the site's training split with DP-SGD.

    The run's settings, the plan's noise and ``history`` (this run's releases, for
    the accountant) are what a training round and a fine-tuning share.
    """
    training = config.training
    return train_private(
        run_model.module,
        site.data.train,
        site.task,
        plan=plan,
        max_grad_norm=config.privacy.max_grad_norm,
        learning_rate=training.learning_rate,
        epochs=training.local_epochs,
        batch_size=training.batch_size,
        history=history,
        device=resolve_device(training.device),
        grad_sample_mode=run_model.grad_sample_mode,
        criterion=run_criterion(training, site.task),
        proximal_mu=proximal_mu,
    )


def plain_local_training(
    model: torch.nn.Module, config: RunConfig, site: Site, *, proximal_mu: float = 0.0
) -> TrainOutcome:
    """Train ``model`` on the site's training split without DP (a run that turned it off)."""
    training = config.training
    return train_plain(
        model,
        site.data.train,
        site.task,
        learning_rate=training.learning_rate,
        epochs=training.local_epochs,
        batch_size=training.batch_size,
        seed=config.data.seed,
        device=resolve_device(training.device),
        criterion=run_criterion(training, site.task),
        proximal_mu=proximal_mu,
    )


def reserve_training(  # noqa: PLR0913 - the release and where it goes in the ledger
    ledger: PrivacyLedger,
    site: Site,
    plan: DpSgdPlan,
    *,
    steps: int,
    run_id: str,
    server_round: int,
    cap: float,
) -> Reservation:
    """Book ``steps`` DP-SGD steps at the plan's noise and sample rate, before anything leaves."""
    return ledger.reserve(
        site.ledger_key,
        label=site.dataset,
        run_id=run_id,
        server_round=server_round,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=steps,
        delta=plan.delta,
        cap_epsilon=cap,
    )


def _dp_reply_metrics(  # noqa: PLR0913 - what one booked release reports
    ledger: PrivacyLedger,
    site: Site,
    run_id: str,
    plan: DpSgdPlan,
    reservation: Reservation,
    steps: int,
) -> ReplyMetrics:
    """Return what a DP round reports: the spending so far and the mechanism's parameters."""
    return {
        ReplyKey.HOSPITAL: site.name,
        **spent_metrics(run_entries(ledger, site, run_id), plan.delta, reservation.epsilon_after),
        ReplyKey.DELTA: plan.delta,
        ReplyKey.NOISE_MULTIPLIER: plan.noise_multiplier,
        ReplyKey.SAMPLE_RATE: plan.sample_rate,
        ReplyKey.STEPS: steps,
    }


def _check_round_budget(
    config: RunConfig, plan: DpSgdPlan, ledger: PrivacyLedger, site: Site, run_id: str
) -> tuple[list[HistoryEntry], float]:
    """Refuse a round whose noise or cost the run or the dataset cannot carry.

    The run keeps room for the evaluations (and the fine-tuning) it still owes. Returns the run's
    accountant history so far and the dataset's epsilon cap.

    Raises
    ------
    shared.errors.FedcareError
        A refusal naming what is spent, the limit and what the round would cost.
    """
    check_noise(plan, len(site.data.train), site=site.name)
    entries = run_entries(ledger, site, run_id)
    history = [entry.history_entry() for entry in entries]
    check_budget(plan, history, site=site.name, reserved=owed_releases(config, plan, entries))
    cap = dataset_cap(config, site)
    check_dataset_budget(ledger, site, plan.round_entry(), cap, delta=plan.delta)
    return history, cap


def _train_without_dp(
    model: torch.nn.Module,
    global_weights: Sequence[np.ndarray],
    config: RunConfig,
    site: Site,
    run_id: str,
) -> RoundUpdate:
    """Train a round of a run that turned DP off (its report says so loudly)."""
    outcome = plain_local_training(model, config, site, proximal_mu=config.training.proximal_mu)
    # Without DP nothing is protected anyway: the training loss may leave.
    metrics: ReplyMetrics = {ReplyKey.HOSPITAL: site.name, ReplyKey.TRAIN_LOSS: outcome.mean_loss}
    delta = _checked_delta(model, global_weights, config, site)
    save_local_parameters(model, site.state, run_id)
    return RoundUpdate(delta=delta, num_examples=len(site.data.train), metrics=metrics, plan=None)


def fresh_model(config: RunConfig, site: Site) -> torch.nn.Module:
    """Return the run's network for this site's data, freshly initialised (as the aggregator's)."""
    return fresh_run_model(config, site).module


def fresh_run_model(config: RunConfig, site: Site) -> RunModel:
    """Build the run's model for this site's data, freshly initialised (as the aggregator's).

    Raises
    ------
    ModelPluginError
        If the run's plugin model is not installed here in the run's version.
    ConfigError
        If the model cannot be trained with DP-SGD, or the pretrained file is
        missing here or differs from the run's.
    """
    return build_run_model(
        config.training,
        input_shape=site.data.train.input_shape,
        input_kind=site.data.train.kind,
        task=site.task,
        seed=config.data.seed,
        private=config.privacy.enabled,
        party=site.name,
    )


def global_model(
    global_weights: Sequence[np.ndarray], config: RunConfig, site: Site, run_id: str
) -> RunModel:
    """Build the global model, completed with this site's own local parameters for the run."""
    run_model = RUN_CACHE.model(site, config, lambda: fresh_run_model(config, site))
    model = run_model.module
    set_weights(model, global_weights, what=f"{site.name}: global model from the aggregator")
    load_local_parameters(model, site.state, run_id, site=site.name)
    return run_model


def _checked_delta(
    model: torch.nn.Module, global_weights: Sequence[np.ndarray], config: RunConfig, site: Site
) -> list[np.ndarray]:
    delta = [new - old for new, old in zip(get_weights(model), global_weights, strict=True)]
    check_update(delta, config, site=site.name)
    return delta


def check_update(delta: Sequence[np.ndarray], config: RunConfig, *, site: str) -> None:
    """Refuse to release a non-finite update, or one SecAgg+ would silently clip.

    Raises
    ------
    InvalidUpdateError
        Naming the problem and the setting that fixes it (no weight values).
    """
    for array in delta:
        if not np.all(np.isfinite(array)):
            raise InvalidUpdateError(
                f"{site}: training produced NaN or infinite weights; lower learning-rate"
            )
    limit = config.secure_aggregation.clipping_range
    largest = max((float(np.abs(a).max()) for a in delta if a.size), default=0.0)
    if config.secure_aggregation.enabled and largest > limit:
        raise InvalidUpdateError(
            f"{site}: an update entry exceeds secagg-clipping-range ({limit:g}), which SecAgg+ "
            "would clip silently; raise secagg-clipping-range or lower learning-rate"
        )
