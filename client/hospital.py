"""One hospital's part of a round, as plain functions that know nothing of Flower.

:func:`train_round` runs DP-SGD from the global model and returns the *delta* to
send. Before training it applies the hospital's policy and refuses a round that
would take the run past its target epsilon, or the dataset's whole history (every
run, from the privacy ledger) past the hospital's cap; after training it refuses
to release an update that is non-finite or outside SecAgg+'s range, and it
records the release in the ledger *before* handing the update over (write-ahead).
The training loss of a DP run never leaves: it would be an exact statistic of
the batches.

:func:`evaluate_round` answers an evaluation request under the same policy and
the same ledger: it releases only noisy statistics of the held-out rows
(:mod:`shared.private_metrics`) as many times as the run planned, each booked
before it leaves, and refuses when any class (reported group) has fewer than
``min-count`` held-out rows. A model's site-local parameters (patient
embeddings) come from and go back to the hospital's state folder
(:mod:`client.local_parameters`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedcare.client.ledger import LedgerEntry, Mechanism, PrivacyLedger
from fedcare.client.local_parameters import load_local_parameters, save_local_parameters
from fedcare.client.policy import PolicyRefusal, check_policy
from fedcare.client.site import Site
from fedcare.client.training import train_plain, train_private
from fedcare.shared.config import FlatValue, RunConfig
from fedcare.shared.device import resolve_device
from fedcare.shared.errors import InvalidUpdateError, PrivacyBudgetExceededError
from fedcare.shared.evaluation import evaluate_model, score_model
from fedcare.shared.keys import InstructionKey, ReplyKey
from fedcare.shared.models import MODELS, build_model
from fedcare.shared.privacy import DpSgdPlan, HistoryEntry, epsilon_spent, plan_dp_sgd
from fedcare.shared.private_metrics import (
    metrics_from_sums,
    noisy_sums,
    released_count,
    row_statistics,
    statistics_design,
    sums_as_reply,
)
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


@dataclass(frozen=True)
class EvaluationRelease:
    """What a hospital releases after evaluating: noisy statistics and what they cost.

    Attributes
    ----------
    loss : float
        Flower's loss field; 0 under DP (the exact loss is never released).
    num_examples : int
        The noisy count of evaluated rows (never below ``min-count``); the exact
        count without DP.
    metrics : ReplyMetrics
        Hospital name, metrics computed from the noisy sums, epsilon spent.
    plan : DpSgdPlan | None
        The plan used (to reuse); ``None`` without DP.
    reservation : int | None
        The ledger entry recording this release (``None`` without DP).
    """

    loss: float
    num_examples: int
    metrics: ReplyMetrics
    plan: DpSgdPlan | None = None
    reservation: int | None = None


def parse_instruction(instruction: Mapping[str, FlatValue]) -> RunConfig:
    """Parse the run config the aggregator sent with an instruction."""
    return RunConfig.from_flat(
        {k: v for k, v in instruction.items() if k != InstructionKey.SERVER_ROUND}
    )


def privacy_plan(config: RunConfig, site: Site) -> DpSgdPlan:
    """Calibrate this hospital's noise for the whole run: DP-SGD and its evaluations."""
    return plan_dp_sgd(
        n_samples=len(site.data.train),
        batch_size=config.training.batch_size,
        local_epochs=config.training.local_epochs,
        rounds=config.federation.rounds,
        target_epsilon=config.privacy.target_epsilon,
        delta=config.privacy.delta,
        evaluation_epsilon=config.privacy.evaluation_epsilon,
        evaluation_releases=config.privacy.evaluation_rounds,
    )


def run_entries(ledger: PrivacyLedger, site: Site, run_id: str) -> list[LedgerEntry]:
    """Return the ledger entries this run has released from the site's dataset so far."""
    entries = ledger.history(site.ledger_key, label=site.dataset)
    return [entry for entry in entries if entry.run_id == run_id]


def dataset_cap(config: RunConfig, site: Site) -> float:
    """Most epsilon the dataset may reach: the hospital's own limit, or the run's target
    for a simulated hospital (which has no limits of its own).
    """
    return site.limits.max_epsilon if site.limits is not None else config.privacy.target_epsilon


def check_dataset_budget(
    ledger: PrivacyLedger, site: Site, entry: HistoryEntry, cap: float, *, delta: float
) -> None:
    """Refuse a release that would take the dataset's whole history past ``cap``.

    Raises
    ------
    PrivacyBudgetExceededError
        Naming what the dataset has spent, the cap and what the release would cost.
    """
    spent = ledger.spent(site.ledger_key, label=site.dataset, delta=delta)
    noise, rate, steps = entry
    after = ledger.preview(
        site.ledger_key,
        label=site.dataset,
        noise_multiplier=noise,
        sample_rate=rate,
        steps=steps,
        delta=delta,
    )
    if after > cap:
        raise PrivacyBudgetExceededError(
            f"{site.name} refuses: dataset '{site.dataset}' has spent epsilon "
            f"{spent:.3f} over all runs (delta {delta:g}); this release would bring it to "
            f"{after:.3f}, past the hospital's cap of {cap:g}. Nothing was computed or sent."
        )


def check_budget(  # noqa: PLR0913 - the release and what it must leave room for
    plan: DpSgdPlan,
    history: Sequence[HistoryEntry],
    *,
    site: str,
    entry: HistoryEntry | None = None,
    reserved: Sequence[HistoryEntry] = (),
    action: str = "train",
) -> None:
    """Refuse a release (a round by default) that would take the run past its target epsilon.

    ``reserved`` holds releases the plan still owes (the run's evaluations not yet
    made): the check counts them as spent, so training never eats their share.

    Raises
    ------
    PrivacyBudgetExceededError
        Naming what is spent, the target, and what the release would cost.
    """
    spent = epsilon_spent(history, delta=plan.delta)
    after = epsilon_spent([*history, entry or plan.round_entry(), *reserved], delta=plan.delta)
    if after > plan.target_epsilon:
        raise PrivacyBudgetExceededError(
            f"{site} refuses to {action}: it has spent epsilon {spent:.3f} of its "
            f"{plan.target_epsilon:.3f} budget (delta {plan.delta:g}) and this release would "
            f"bring it to {after:.3f}. Start a run with fewer rounds or a larger budget."
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
    model = _global_model(global_weights, config, site, run_id)
    device = resolve_device(config.training.device)
    training = config.training
    metrics: ReplyMetrics = {ReplyKey.HOSPITAL: site.name}
    if not config.privacy.enabled:
        outcome = train_plain(
            model,
            site.data.train,
            site.task,
            learning_rate=training.learning_rate,
            epochs=training.local_epochs,
            batch_size=training.batch_size,
            seed=config.data.seed,
            device=device,
        )
        # Without DP nothing is protected anyway (the run says so loudly).
        metrics[ReplyKey.TRAIN_LOSS] = outcome.mean_loss
        delta = _checked_delta(model, global_weights, config, site)
        save_local_parameters(model, site.state, run_id)
        return RoundUpdate(
            delta=delta, num_examples=len(site.data.train), metrics=metrics, plan=None
        )
    plan = plan or privacy_plan(config, site)
    entries = run_entries(ledger, site, run_id)
    history = [entry.history_entry() for entry in entries]
    evaluated = sum(entry.is_evaluation for entry in entries)
    owed = [plan.evaluation_entry()] * max(plan.evaluation_releases - evaluated, 0)
    check_budget(plan, history, site=site.name, reserved=owed)
    cap = dataset_cap(config, site)
    check_dataset_budget(ledger, site, plan.round_entry(), cap, delta=plan.delta)
    outcome = train_private(
        model,
        site.data.train,
        site.task,
        plan=plan,
        max_grad_norm=config.privacy.max_grad_norm,
        learning_rate=training.learning_rate,
        epochs=training.local_epochs,
        batch_size=training.batch_size,
        history=history,
        device=device,
        grad_sample_mode=MODELS[config.training.model].grad_sample_mode,
    )
    delta = _checked_delta(model, global_weights, config, site)
    reservation = ledger.reserve(
        site.ledger_key,
        label=site.dataset,
        run_id=run_id,
        server_round=server_round,
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=outcome.steps,
        delta=plan.delta,
        cap_epsilon=cap,
    )
    # Kept only once the release is booked: later rounds build on these values,
    # so they must come from spending the ledger has counted.
    save_local_parameters(model, site.state, run_id)
    metrics |= _spent(run_entries(ledger, site, run_id), plan.delta, reservation.epsilon_after)
    metrics |= {
        ReplyKey.DELTA: plan.delta,
        ReplyKey.NOISE_MULTIPLIER: plan.noise_multiplier,
        ReplyKey.SAMPLE_RATE: plan.sample_rate,
        ReplyKey.STEPS: outcome.steps,
    }
    return RoundUpdate(
        delta=delta,
        num_examples=len(site.data.train),
        metrics=metrics,
        plan=plan,
        reservation=reservation.id,
    )


def fresh_model(config: RunConfig, site: Site) -> torch.nn.Module:
    """The run's model for this site's data, freshly initialised (as the aggregator's)."""
    return build_model(
        config.training.model,
        input_shape=site.data.train.input_shape,
        input_kind=site.data.train.kind,
        task=site.task,
        seed=config.data.seed,
    )


def _global_model(
    global_weights: Sequence[np.ndarray], config: RunConfig, site: Site, run_id: str
) -> torch.nn.Module:
    """Build the global model, completed with this site's own local parameters for the run."""
    model = fresh_model(config, site)
    set_weights(model, global_weights, what=f"{site.name}: global model from the aggregator")
    load_local_parameters(model, site.state, run_id, site=site.name)
    return model


def _checked_delta(
    model: torch.nn.Module, global_weights: Sequence[np.ndarray], config: RunConfig, site: Site
) -> list[np.ndarray]:
    delta = [new - old for new, old in zip(get_weights(model), global_weights, strict=True)]
    check_update(delta, config, site=site.name)
    return delta


def _spent(entries: Sequence[LedgerEntry], delta: float, dataset_epsilon: float) -> ReplyMetrics:
    """Epsilon this run has spent (in all, on training, on evaluation) and the dataset's total."""
    training = [entry.history_entry() for entry in entries if not entry.is_evaluation]
    evaluation = [entry.history_entry() for entry in entries if entry.is_evaluation]
    return {
        ReplyKey.EPSILON: epsilon_spent([*training, *evaluation], delta=delta),
        ReplyKey.TRAINING_EPSILON: epsilon_spent(training, delta=delta),
        ReplyKey.EVALUATION_EPSILON: epsilon_spent(evaluation, delta=delta),
        ReplyKey.DATASET_EPSILON: dataset_epsilon,
    }


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


def evaluate_round(  # noqa: PLR0913 - the release's inputs, each needed
    global_weights: Sequence[np.ndarray],
    config: RunConfig,
    site: Site,
    *,
    plan: DpSgdPlan | None,
    ledger: PrivacyLedger,
    run_id: str,
    server_round: int,
) -> EvaluationRelease:
    """Score the global model on the hospital's held-out rows; release only noisy statistics.

    Everything that can refuse runs before the model is scored: the hospital's
    policy, the minimum count per class, the run's planned number of
    evaluations, its budget and the dataset's cap. The release is in the ledger
    before this returns.

    Raises
    ------
    PrivacyBudgetExceededError
        If the run breaks the hospital's policy, a class has too few held-out
        rows, or the release would exceed the plan, the run's budget or the cap.
    """
    if site.limits is not None:
        check_policy(config, site.limits, site=site.name)
    check_group_counts(site)
    if not config.privacy.enabled:
        return _exact_evaluation(global_weights, config, site, run_id)
    plan = plan or privacy_plan(config, site)
    entry = _check_evaluation_allowed(plan, ledger, site, run_id)
    cap = dataset_cap(config, site)
    check_dataset_budget(ledger, site, entry, cap, delta=plan.delta)
    model = _global_model(global_weights, config, site, run_id)
    scored = score_model(
        model,
        site.data.evaluation,
        site.task,
        resolve_device(config.training.device),
        known=site.data.train,
    )
    design = statistics_design(site.task)
    rows = row_statistics(site.task, scored.truth, scored.scores)
    sums = noisy_sums(rows, design, plan.evaluation_noise_multiplier)
    reservation = ledger.reserve(
        site.ledger_key,
        label=site.dataset,
        mechanism=Mechanism.GAUSSIAN,
        run_id=run_id,
        server_round=server_round,
        noise_multiplier=entry[0],
        sample_rate=entry[1],
        steps=entry[2],
        delta=plan.delta,
        cap_epsilon=cap,
    )
    metrics: ReplyMetrics = {
        ReplyKey.HOSPITAL: site.name,
        **metrics_from_sums(site.task, sums),
        **sums_as_reply(sums),
    }
    metrics |= _spent(run_entries(ledger, site, run_id), plan.delta, reservation.epsilon_after)
    count = max(round(released_count(site.task, sums)), site.min_count)
    return EvaluationRelease(
        loss=0.0,
        num_examples=count,
        metrics={k: v for k, v in metrics.items() if not _is_nan(v)},
        plan=plan,
        reservation=reservation.id,
    )


def check_group_counts(site: Site) -> None:
    """Refuse to evaluate unless every class (reported group) has ``min-count`` held-out rows.

    The refusal says which rule, never a count; that it happened tells the
    aggregator one bit: some group of this hospital's held-out rows is small.

    Raises
    ------
    PolicyRefusal
        If the held-out rows, or any class of them, number fewer than ``min-count``.
    """
    evaluation = site.data.evaluation
    groups = [len(evaluation)]
    if site.task.stratified:
        strata = site.task.strata(evaluation.labels)
        groups += [int((strata == value).sum()) for value in np.unique(strata)]
    if min(groups) < site.min_count:
        raise PolicyRefusal(
            f"{site.name} refuses to evaluate: its held-out rows, or one class of them, number "
            f"fewer than its min-count ({site.min_count}); metrics about so few patients never "
            "leave. The hospital can hold out more rows (eval-fraction in its site.toml)."
        )


def _check_evaluation_allowed(
    plan: DpSgdPlan, ledger: PrivacyLedger, site: Site, run_id: str
) -> HistoryEntry:
    """Return the ledger entry of one more evaluation release, if the run's plan allows it.

    Raises
    ------
    PolicyRefusal
        If the run planned no evaluation, or has had every evaluation it planned.
    PrivacyBudgetExceededError
        If one more would take the run past its target epsilon.
    """
    entries = run_entries(ledger, site, run_id)
    done = sum(entry.is_evaluation for entry in entries)
    if done >= plan.evaluation_releases:
        raise PolicyRefusal(
            f"{site.name} refuses to evaluate: the run planned {plan.evaluation_releases} "
            f"evaluation release(s) and has had {done}; each one spends privacy budget, so "
            "no more are answered (raise evaluation-rounds when starting a run)"
        )
    entry = plan.evaluation_entry()
    history = [e.history_entry() for e in entries]
    check_budget(plan, history, site=site.name, entry=entry, action="evaluate")
    return entry


def _exact_evaluation(
    global_weights: Sequence[np.ndarray], config: RunConfig, site: Site, run_id: str
) -> EvaluationRelease:
    """Exact metrics, for a run that turned DP off (and says so in its report)."""
    model = _global_model(global_weights, config, site, run_id)
    result = evaluate_model(
        model,
        site.data.evaluation,
        site.task,
        resolve_device(config.training.device),
        known=site.data.train,
    )
    metrics: ReplyMetrics = {
        ReplyKey.HOSPITAL: site.name,
        ReplyKey.LOSS: result.loss,
        **result.metrics,
    }
    return EvaluationRelease(
        loss=result.loss,
        num_examples=result.num_examples,
        metrics={k: v for k, v in metrics.items() if not _is_nan(v)},
    )


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
