"""Personalisation: after the run, a hospital fine-tunes the final global model on its own patients.

A shared model serves the majority; a site whose case mix differs gains from
adapting it. With ``personalise-layers`` set, the run's privacy plan reserves,
from its start, one more DP-SGD round and one more evaluation release
(:func:`client.budget.privacy_plan`), so training never eats their share. At
the last round's evaluation each hospital:

1. releases the global model's noisy statistics, as in every evaluation round;
2. checks that the fine-tuning and its evaluation fit the run's plan, its
   budget and the dataset's cap (nothing is trained otherwise);
3. fine-tunes the chosen parameters (all, the head, or the head's bias) on its
   training split with the run's DP-SGD plan and books the steps in its ledger
   (as round ``rounds + 1``);
4. scores the fine-tuned model on its held-out rows, books that Gaussian release
   and adds the metrics computed from its noisy sums, prefixed ``personalised-``.

The personalised model never leaves the hospital: it is written, owner-only, to
its state folder. A refused fine-tuning keeps the global metrics, with the reason
in the hospital's log and audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from fedcare.client.budget import (
    check_dataset_budget,
    dataset_cap,
    is_fine_tuning,
    personalises,
    run_entries,
    spent_metrics,
)
from fedcare.client.evaluation_round import (
    EvaluationRelease,
    check_evaluation_allowed,
    defined_only,
    evaluate_round,
    exact_evaluation,
    noisy_evaluation_sums,
    reserve_evaluation,
)
from fedcare.client.hospital import (
    ReplyMetrics,
    global_model,
    plain_local_training,
    private_local_training,
    reserve_training,
)
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.local_parameters import run_file_stem
from fedcare.client.policy import PolicyRefusal
from fedcare.client.site import Site
from fedcare.client.state_files import PERSONALISED_DIR
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import PersonaliseLayers
from fedcare.shared.errors import ConfigError, PrivacyBudgetExceededError, SiteTooSmallError
from fedcare.shared.fine_tuning import head_name
from fedcare.shared.keys import PERSONALISED_PREFIX, ReplyKey
from fedcare.shared.privacy import DpSgdPlan, check_noise
from fedcare.shared.private_files import PRIVATE_FILE, make_private_directory
from fedcare.shared.private_metrics import metrics_from_sums
from fedcare.shared.serialization import ModelLayout, get_weights, save_safetensors

logger = logging.getLogger(__name__)


def evaluate_and_personalise(  # noqa: PLR0913 - as evaluate_round takes them
    global_weights: Sequence[np.ndarray],
    config: RunConfig,
    site: Site,
    *,
    plan: DpSgdPlan | None,
    ledger: PrivacyLedger,
    run_id: str,
    server_round: int,
) -> EvaluationRelease:
    """Release the global model's evaluation; after the last round, personalise and add its own.

    A refused personalisation (budget, noise, a model without a head) keeps the
    global release, with the reason in ``personalisation_refused``.

    Raises
    ------
    PrivacyBudgetExceededError
        If the global evaluation itself is refused (:func:`evaluate_round`).
    """
    release = evaluate_round(
        global_weights,
        config,
        site,
        plan=plan,
        ledger=ledger,
        run_id=run_id,
        server_round=server_round,
    )
    if not personalises(config) or server_round != config.federation.rounds:
        return release
    try:
        return _personalised(release, global_weights, config, site, ledger=ledger, run_id=run_id)
    except (PrivacyBudgetExceededError, SiteTooSmallError, ConfigError) as refusal:
        logger.warning("%s keeps the global model's metrics only: %s", site.name, refusal)
        return replace(release, personalisation_refused=str(refusal))


def _personalised(  # noqa: PLR0913 - the release it extends and what it needs
    release: EvaluationRelease,
    global_weights: Sequence[np.ndarray],
    config: RunConfig,
    site: Site,
    *,
    ledger: PrivacyLedger,
    run_id: str,
) -> EvaluationRelease:
    """Fine-tune with DP-SGD, book it, release the personalised model's noisy statistics."""
    plan = release.plan
    if plan is None:  # a run without DP: exact metrics, nothing to book
        exact = _exact_personalised(global_weights, config, site, run_id)
        return replace(release, metrics=release.metrics | exact)
    evaluation = _check_personalisation_allowed(config, plan, ledger, site, run_id)
    cap, server_round = dataset_cap(config, site), config.federation.rounds + 1
    run_model = global_model(global_weights, config, site, run_id)
    history = [entry.history_entry() for entry in run_entries(ledger, site, run_id)]
    with _training_only(run_model.module, config.training.personalise_layers):
        steps = private_local_training(run_model, config, site, plan, history).steps
    # Booked before anything derived from the fine-tuned model is computed or leaves.
    tuned = reserve_training(
        ledger, site, plan, steps=steps, run_id=run_id, server_round=server_round, cap=cap
    )
    _keep_at_site(run_model.module, site.state, run_id)
    sums = noisy_evaluation_sums(run_model.module, config, site, plan)
    scored = reserve_evaluation(
        ledger,
        site,
        evaluation,
        run_id=run_id,
        server_round=server_round,
        delta=plan.delta,
        cap=cap,
    )
    spent = spent_metrics(run_entries(ledger, site, run_id), plan.delta, scored.epsilon_after)
    metrics = release.metrics | _prefixed(metrics_from_sums(site.task, sums)) | spent
    return replace(release, metrics=metrics, personalised=(tuned.id, scored.id))


def _check_personalisation_allowed(
    config: RunConfig, plan: DpSgdPlan, ledger: PrivacyLedger, site: Site, run_id: str
) -> tuple[float, float, int]:
    """Return the personalised evaluation's ledger entry, if the fine-tuning and it may happen.

    Raises
    ------
    PrivacyBudgetExceededError
        If the run has fine-tuned already, has had every evaluation it planned,
        or the fine-tuning and its evaluation would overspend the run's target or
        the dataset's cap. Nothing is trained.
    SiteTooSmallError
        If DP-SGD's noise would swamp what the fine-tuning learns.
    """
    if any(is_fine_tuning(entry, config) for entry in run_entries(ledger, site, run_id)):
        raise PolicyRefusal(f"{site.name} refuses to personalise again: this run has done so")
    check_noise(plan, len(site.data.train), site=site.name)
    evaluation = check_evaluation_allowed(
        plan,
        ledger,
        site,
        run_id,
        releases=plan.evaluation_releases,
        then=[plan.round_entry()],
        action="personalise",
    )
    check_dataset_budget(
        ledger,
        site,
        plan.round_entry(),
        dataset_cap(config, site),
        delta=plan.delta,
        then=[evaluation],
    )
    return evaluation


def _exact_personalised(
    global_weights: Sequence[np.ndarray], config: RunConfig, site: Site, run_id: str
) -> ReplyMetrics:
    """Fine-tune without DP and score exactly, for a run that turned DP off (its report says so)."""
    model = global_model(global_weights, config, site, run_id).module
    with _training_only(model, config.training.personalise_layers):
        plain_local_training(model, config, site)
    _keep_at_site(model, site.state, run_id)
    result = exact_evaluation(model, config, site)
    return _prefixed({ReplyKey.LOSS.value: result.loss, **result.metrics})


@contextmanager
def _training_only(model: nn.Module, layers: PersonaliseLayers) -> Iterator[None]:
    """Freeze every parameter outside ``layers`` while the block runs, then restore.

    Frozen parameters are neither clipped, noised nor changed by DP-SGD
    (:func:`client.training.train_private`); the accounting is the same.
    """
    trained = {name: p.requires_grad for name, p in model.named_parameters()}
    if layers is not PersonaliseLayers.ALL:
        head = head_name(model)
        prefix = f"{head}." if head else ""  # a bare nn.Linear is its own head
        for name, parameter in model.named_parameters():
            in_scope = (
                name == f"{prefix}bias"
                if layers is PersonaliseLayers.BIAS
                else name.startswith(prefix)
            )
            parameter.requires_grad = trained[name] and in_scope
    try:
        yield
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = trained[name]


def _prefixed(metrics: dict[str, float]) -> ReplyMetrics:
    """Name each metric as the personalised model's; leave out those undefined (``nan``)."""
    return defined_only({f"{PERSONALISED_PREFIX}{key}": value for key, value in metrics.items()})


def model_path(state: Path, run_id: str) -> Path:
    """Return where a hospital keeps its personalised model of run ``run_id``."""
    return state / PERSONALISED_DIR / f"{run_file_stem(run_id)}.safetensors"


def _keep_at_site(model: nn.Module, state: Path, run_id: str) -> None:
    """Write the fine-tuned model owner-only: it is derived from the site's patients."""
    path = model_path(state, run_id)
    make_private_directory(path.parent)
    weights = ModelLayout.of(model).named(get_weights(model))
    save_safetensors(path, weights, {"run": run_id}, mode=PRIVATE_FILE)
