"""A hospital's answer to an evaluation request: noisy statistics, booked before they leave.

:func:`evaluate_round` answers under the same policy and the same ledger as
training: it releases only noisy statistics of the held-out rows
(:mod:`shared.private_metrics`), as many times as the run planned, each booked
before it leaves, and refuses when any class (reported group) has fewer than
``min-count`` held-out rows. Without DP (a run that says so in its report) it
returns exact metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedcare.client.budget import (
    check_budget,
    check_dataset_budget,
    dataset_cap,
    privacy_plan,
    run_entries,
    spent_metrics,
)
from fedcare.client.hospital import ReplyMetrics, global_model
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.ledger_records import Mechanism, Reservation
from fedcare.client.policy import PolicyRefusal, check_policy
from fedcare.client.site import Site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.device import resolve_device
from fedcare.shared.evaluation import Evaluation, evaluate_model, score_model
from fedcare.shared.keys import ReplyKey
from fedcare.shared.privacy import DpSgdPlan, HistoryEntry
from fedcare.shared.private_metrics import (
    metrics_from_sums,
    noisy_sums,
    released_count,
    row_statistics,
    statistics_design,
    sums_as_reply,
)
from fedcare.shared.tasks import TaskKind


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
    personalised : tuple[int, ...]
        The ledger entries of the personalisation released with it (its
        fine-tuning and its evaluation), if any.
    personalisation_refused : str
        Why the hospital did not personalise when the run asked it to ("" if it did).
    """

    loss: float
    num_examples: int
    metrics: ReplyMetrics
    plan: DpSgdPlan | None = None
    reservation: int | None = None
    personalised: tuple[int, ...] = ()
    personalisation_refused: str = ""

    @property
    def reservations(self) -> tuple[int, ...]:
        """Return every ledger entry this answer releases."""
        own = () if self.reservation is None else (self.reservation,)
        return (*own, *self.personalised)


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
    entry = check_evaluation_allowed(
        plan, ledger, site, run_id, releases=config.privacy.evaluation_rounds
    )
    cap = dataset_cap(config, site)
    check_dataset_budget(ledger, site, entry, cap, delta=plan.delta)
    model = global_model(global_weights, config, site, run_id).module
    sums = noisy_evaluation_sums(model, config, site, plan)
    reservation = reserve_evaluation(
        ledger, site, entry, run_id=run_id, server_round=server_round, delta=plan.delta, cap=cap
    )
    metrics: ReplyMetrics = {
        ReplyKey.HOSPITAL: site.name,
        **metrics_from_sums(site.task, sums),
        **sums_as_reply(sums),
    }
    entries = run_entries(ledger, site, run_id)
    metrics |= spent_metrics(entries, plan.delta, reservation.epsilon_after)
    count = max(round(released_count(site.task, sums)), site.min_count)
    return EvaluationRelease(
        loss=0.0,
        num_examples=count,
        metrics=defined_only(metrics),
        plan=plan,
        reservation=reservation.id,
    )


def reserve_evaluation(  # noqa: PLR0913 - the release and where it goes in the ledger
    ledger: PrivacyLedger,
    site: Site,
    entry: HistoryEntry,
    *,
    run_id: str,
    server_round: int,
    delta: float,
    cap: float,
) -> Reservation:
    """Book one Gaussian release of noisy sums (``entry``) in the ledger, before it leaves."""
    noise_multiplier, sample_rate, steps = entry
    return ledger.reserve(
        site.ledger_key,
        label=site.dataset,
        mechanism=Mechanism.GAUSSIAN,
        run_id=run_id,
        server_round=server_round,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        delta=delta,
        cap_epsilon=cap,
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
        # Every class the task has counts, those with no held-out row too: the noisy sums of
        # an absent class are noise, and a metric computed from them would read as a fact.
        strata = site.task.strata(evaluation.labels)
        groups += [int((strata == value).sum()) for value in _strata_values(site)]
    if min(groups) < site.min_count:
        raise PolicyRefusal(
            f"{site.name} refuses to evaluate: its held-out rows, or one class of them, number "
            f"fewer than its min-count ({site.min_count}); metrics about so few patients never "
            "leave. The hospital can hold out more rows (eval-fraction in its site.toml)."
        )


def _strata_values(site: Site) -> range:
    """Every value a held-out row's stratum can take: each class, or the event flag."""
    return range(2 if site.task.kind is TaskKind.SURVIVAL else site.task.num_classes)


def noisy_evaluation_sums(
    model: nn.Module, config: RunConfig, site: Site, plan: DpSgdPlan
) -> np.ndarray:
    """Score ``model`` on the held-out rows; return only the noisy sums of their statistics."""
    scored = score_model(
        model,
        site.data.evaluation,
        site.task,
        resolve_device(config.training.device),
        known=site.data.train,
    )
    rows = row_statistics(site.task, scored.truth, scored.scores)
    return noisy_sums(rows, statistics_design(site.task), plan.evaluation_noise_multiplier)


def check_evaluation_allowed(  # noqa: PLR0913 - the release, its run and its allowance
    plan: DpSgdPlan,
    ledger: PrivacyLedger,
    site: Site,
    run_id: str,
    *,
    releases: int,
    then: Sequence[HistoryEntry] = (),
    action: str = "evaluate",
) -> HistoryEntry:
    """Return the ledger entry of one more evaluation release, if the run's plan allows it.

    ``releases`` is how many evaluation releases this kind of release may bring
    the run to; ``then`` the releases the check must leave room for after it;
    ``action`` what a refusal says the hospital refuses to do.

    Raises
    ------
    PolicyRefusal
        If the run planned no evaluation, or has had every evaluation it planned.
    PrivacyBudgetExceededError
        If one more would take the run past its target epsilon.
    """
    entries = run_entries(ledger, site, run_id)
    done = sum(entry.is_evaluation for entry in entries)
    if done >= releases:
        raise PolicyRefusal(
            f"{site.name} refuses to {action}: the run planned {releases} "
            f"evaluation release(s) and has had {done}; each one spends privacy budget, so "
            "no more are answered (raise evaluation-rounds when starting a run)"
        )
    entry = plan.evaluation_entry()
    history = [e.history_entry() for e in entries]
    check_budget(plan, history, site=site.name, entry=entry, reserved=then, action=action)
    return entry


def _exact_evaluation(
    global_weights: Sequence[np.ndarray], config: RunConfig, site: Site, run_id: str
) -> EvaluationRelease:
    """Exact metrics, for a run that turned DP off (and says so in its report)."""
    model = global_model(global_weights, config, site, run_id).module
    result = exact_evaluation(model, config, site)
    metrics: ReplyMetrics = {
        ReplyKey.HOSPITAL: site.name,
        ReplyKey.LOSS: result.loss,
        **result.metrics,
    }
    return EvaluationRelease(
        loss=result.loss, num_examples=result.num_examples, metrics=defined_only(metrics)
    )


def exact_evaluation(model: nn.Module, config: RunConfig, site: Site) -> Evaluation:
    """Score ``model`` exactly on the held-out rows (only for a run without DP)."""
    device = resolve_device(config.training.device)
    return evaluate_model(model, site.data.evaluation, site.task, device, known=site.data.train)


def defined_only(metrics: ReplyMetrics) -> ReplyMetrics:
    """Leave out the metrics that are undefined (``nan``): they tell nothing and never leave."""
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
