"""A hospital's privacy budget for one release: its plan, its checks, what it has spent.

The run's plan (:func:`privacy_plan`) calibrates DP-SGD and evaluation noise
together; before any release the hospital checks it against the run's target
(:func:`check_budget`, which keeps the share of evaluations still owed) and the
dataset's whole history against its cap (:func:`check_dataset_budget`);
:func:`spent_metrics` says what a release brought the run and the dataset to.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcare.client.ledger import PrivacyLedger
from fedcare.client.ledger_records import LedgerEntry
from fedcare.client.site import Site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import PersonaliseLayers
from fedcare.shared.errors import PrivacyBudgetExceededError
from fedcare.shared.keys import ReplyKey
from fedcare.shared.privacy import DpSgdPlan, HistoryEntry, epsilon_spent, plan_dp_sgd


def privacy_plan(config: RunConfig, site: Site) -> DpSgdPlan:
    """Calibrate this hospital's noise for the whole run: DP-SGD, its evaluations, its fills.

    A run that personalises plans, from its start, one more DP-SGD round (the
    fine-tuning) and one more evaluation release (the personalised metrics).
    """
    personalised = int(personalises(config))
    return plan_dp_sgd(
        n_samples=len(site.data.train),
        batch_size=config.training.batch_size,
        local_epochs=config.training.local_epochs,
        rounds=config.federation.rounds + personalised,
        target_epsilon=config.privacy.target_epsilon,
        delta=config.privacy.delta,
        evaluation_epsilon=config.privacy.evaluation_epsilon,
        evaluation_releases=config.privacy.evaluation_rounds + personalised,
        reserved=site.reserved,
    )


def personalises(config: RunConfig) -> bool:
    """Return whether the run ends with each hospital's private fine-tuning of the final model."""
    return config.training.personalise_layers is not PersonaliseLayers.NONE


def is_fine_tuning(entry: LedgerEntry, config: RunConfig) -> bool:
    """Tell whether a ledger entry is the run's fine-tuning: DP-SGD after the last round."""
    return not entry.is_evaluation and entry.server_round > config.federation.rounds


def owed_releases(
    config: RunConfig, plan: DpSgdPlan, entries: Sequence[LedgerEntry]
) -> list[HistoryEntry]:
    """Return the releases the plan still owes: evaluations not yet made, the fine-tuning.

    A round counts them as spent, so training never eats their share.
    """
    evaluated = sum(entry.is_evaluation for entry in entries)
    owed = [plan.evaluation_entry()] * max(plan.evaluation_releases - evaluated, 0)
    fine_tuned = any(is_fine_tuning(entry, config) for entry in entries)
    if personalises(config) and config.privacy.enabled and not fine_tuned:
        owed.append(plan.round_entry())
    return owed


def run_entries(ledger: PrivacyLedger, site: Site, run_id: str) -> list[LedgerEntry]:
    """Return the ledger entries this run has released from the site's dataset so far."""
    entries = ledger.history(site.ledger_key, label=site.dataset)
    return [entry for entry in entries if entry.run_id == run_id]


def dataset_cap(config: RunConfig, site: Site) -> float:
    """Return the most epsilon the dataset may reach.

    That is the hospital's own limit, or the run's target for a simulated
    hospital (which has no limits of its own).
    """
    return site.limits.max_epsilon if site.limits is not None else config.privacy.target_epsilon


def check_dataset_budget(  # noqa: PLR0913 - the release and what must follow it
    ledger: PrivacyLedger,
    site: Site,
    entry: HistoryEntry,
    cap: float,
    *,
    delta: float,
    then: Sequence[HistoryEntry] = (),
) -> None:
    """Refuse a release (and those that must follow it, ``then``) past the dataset's ``cap``.

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
        then=then,
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


def spent_metrics(
    entries: Sequence[LedgerEntry], delta: float, dataset_epsilon: float
) -> dict[str, float]:
    """Epsilon this run has spent (in all, on training, on evaluation) and the dataset's total."""
    training = [entry.history_entry() for entry in entries if not entry.is_evaluation]
    evaluation = [entry.history_entry() for entry in entries if entry.is_evaluation]
    return {
        ReplyKey.EPSILON: epsilon_spent([*training, *evaluation], delta=delta),
        ReplyKey.TRAINING_EPSILON: epsilon_spent(training, delta=delta),
        ReplyKey.EVALUATION_EPSILON: epsilon_spent(evaluation, delta=delta),
        ReplyKey.DATASET_EPSILON: dataset_epsilon,
    }
