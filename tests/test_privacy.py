"""DP-SGD accounting: calibration meets the target; epsilon matches an independent RDP count."""

import numpy as np
import pytest

from fedcare.client.budget import check_budget, privacy_plan
from fedcare.client.hospital import fresh_model, train_round
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.site import Site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import PrivacyBudgetExceededError
from fedcare.shared.privacy import epsilon_spent, plan_dp_sgd, steps_per_epoch
from fedcare.shared.serialization import get_weights
from tests.privacy_oracle import independent_epsilon


@pytest.mark.parametrize(
    ("n", "batch", "epochs", "rounds", "target", "delta"),
    [(76, 32, 2, 5, 3.0, 1e-5), (140, 16, 1, 10, 1.0, 1e-6), (500, 64, 3, 3, 8.0, 1e-5)],
)
def test_plan_spends_at_most_the_target(
    n: int, batch: int, epochs: int, rounds: int, target: float, delta: float
) -> None:
    plan = plan_dp_sgd(
        n_samples=n,
        batch_size=batch,
        local_epochs=epochs,
        rounds=rounds,
        target_epsilon=target,
        delta=delta,
    )
    assert plan.sample_rate == pytest.approx(1 / steps_per_epoch(n, batch))
    assert plan.steps_per_round == epochs * steps_per_epoch(n, batch)
    total = independent_epsilon(
        [(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round * rounds)], delta
    )
    assert total <= target
    assert total > 0.95 * target  # calibrated, not needlessly noisy


def test_composition_over_rounds_matches_independent_computation() -> None:
    plan = plan_dp_sgd(
        n_samples=120, batch_size=32, local_epochs=2, rounds=4, target_epsilon=2.0, delta=1e-5
    )
    spent = [epsilon_spent([plan.round_entry()] * r, delta=1e-5) for r in range(1, 5)]
    assert spent == sorted(spent)
    for rounds, epsilon in enumerate(spent, start=1):
        expected = independent_epsilon(
            [(plan.noise_multiplier, plan.sample_rate, rounds * plan.steps_per_round)], 1e-5
        )
        assert epsilon == pytest.approx(expected, rel=1e-9)
    assert epsilon_spent([], delta=1e-5) == 0.0


def test_rounds_beyond_the_plan_are_refused() -> None:
    plan = plan_dp_sgd(
        n_samples=100, batch_size=25, local_epochs=1, rounds=2, target_epsilon=1.0, delta=1e-5
    )
    check_budget(plan, [plan.round_entry()], site="h")
    with pytest.raises(PrivacyBudgetExceededError, match="h refuses to train") as caught:
        check_budget(plan, [plan.round_entry()] * 2, site="h")
    assert "budget" in str(caught.value) and "would bring it to" in str(caught.value)


def _initial(config: RunConfig, site: Site) -> list[np.ndarray]:
    return get_weights(fresh_model(config, site))


def test_accountant_history_persists_across_rounds_and_is_never_understated(
    config: RunConfig, site: Site, ledger: PrivacyLedger
) -> None:
    plan = privacy_plan(config, site)
    weights, cached = _initial(config, site), None
    reported = []
    for server_round in range(1, config.federation.rounds + 1):
        update = train_round(
            weights, config, site, plan=cached, ledger=ledger, run_id="r", server_round=server_round
        )
        cached = update.plan
        assert cached == plan
        weights = [w + d for w, d in zip(weights, update.delta, strict=True)]
        reported.append(update.metrics["epsilon"])
        assert update.metrics["noise-multiplier"] == plan.noise_multiplier
        assert update.metrics["sample-rate"] == plan.sample_rate
    steps_taken = sum(entry.steps for entry in ledger.history(site.dataset))
    assert steps_taken == config.federation.rounds * plan.steps_per_round
    independent = independent_epsilon(
        [(plan.noise_multiplier, plan.sample_rate, steps_taken)], config.privacy.delta
    )
    assert reported[-1] == pytest.approx(independent, rel=1e-9)
    assert reported == sorted(reported)
    assert reported[-1] <= config.privacy.target_epsilon
    assert update.metrics["dataset-epsilon"] == pytest.approx(reported[-1], rel=1e-9)
    with pytest.raises(PrivacyBudgetExceededError, match="refuses to train"):
        train_round(weights, config, site, plan=cached, ledger=ledger, run_id="r", server_round=4)
    assert len(ledger.history(site.dataset)) == config.federation.rounds


def test_a_second_run_is_refused_once_the_dataset_budget_is_spent(
    config: RunConfig, site: Site, ledger: PrivacyLedger
) -> None:
    weights = _initial(config, site)
    for server_round in range(1, config.federation.rounds + 1):
        train_round(
            weights,
            config,
            site,
            plan=None,
            ledger=ledger,
            run_id="first",
            server_round=server_round,
        )
    with pytest.raises(PrivacyBudgetExceededError, match="over all runs") as caught:
        train_round(
            weights, config, site, plan=None, ledger=ledger, run_id="second", server_round=1
        )
    assert "past the hospital's cap" in str(caught.value)
    assert {entry.run_id for entry in ledger.history(site.dataset)} == {"first"}


def test_the_plan_survives_the_node_context_between_rounds() -> None:
    from flwr.app import Context, RecordDict

    from fedcare.client.client_app import load_plan, store_plan

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    assert load_plan(context) is None
    plan = plan_dp_sgd(
        n_samples=90, batch_size=30, local_epochs=1, rounds=2, target_epsilon=1.0, delta=1e-5
    )
    store_plan(context, plan)
    assert load_plan(context) == plan


def test_a_cached_plan_of_another_shape_means_calibrate_again() -> None:
    from fedcare.client.plan_values import plan_from_values, plan_values

    plan = plan_dp_sgd(
        n_samples=90, batch_size=30, local_epochs=1, rounds=2, target_epsilon=1.0, delta=1e-5
    )
    values = plan_values(plan)
    assert plan_from_values(values) == plan
    assert plan_from_values(values[:-2]) is None  # cached by an older fedcare
    assert plan_from_values([*values[:-1], "1"]) is None
    assert plan_from_values(3.0) is None
