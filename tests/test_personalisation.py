"""Personalisation: fine-tuning and its evaluation are planned and booked; only metrics leave."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedcare.client.budget import privacy_plan
from fedcare.client.egress import ALLOWED_METRICS
from fedcare.client.evaluation_round import evaluate_round
from fedcare.client.hospital import fresh_model, train_round
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.personalisation import evaluate_and_personalise, model_path
from fedcare.client.session import HospitalSession
from fedcare.client.site import Site, simulated_state
from fedcare.client.state_files import AUDIT_FILE
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import PrivacyBudgetExceededError
from fedcare.shared.keys import (
    NOISY_SUM_KEY,
    PERSONALISED_METRICS,
    PERSONALISED_PREFIX,
    MetricName,
    NodeConfigKey,
)
from fedcare.shared.serialization import ModelLayout, get_weights
from fedcare.simulations.builtin_data import BuiltinData
from tests.privacy_oracle import independent_epsilon

ROUNDS = 3


def _config(layers: str = "head", **extra: object) -> RunConfig:
    return RunConfig.from_flat(
        {"num-server-rounds": ROUNDS, "device": "cpu", "personalise-layers": layers, **extra}  # type: ignore[dict-item]
    )


def _global_metrics(metrics: dict[str, object]) -> set[str]:
    return set(metrics) & {name.value for name in MetricName}


def _initial(config: RunConfig, site: Site) -> list[np.ndarray]:
    return get_weights(fresh_model(config, site))


def _federate(
    config: RunConfig, site: Site, ledger: PrivacyLedger, run_id: str
) -> list[np.ndarray]:
    """Train every round of the run as one hospital (its own update is the global model)."""
    weights = _initial(config, site)
    for server_round in range(1, ROUNDS + 1):
        update = train_round(
            weights,
            config,
            site,
            plan=None,
            ledger=ledger,
            run_id=run_id,
            server_round=server_round,
        )
        weights = [w + d for w, d in zip(weights, update.delta, strict=True)]
    return weights


def test_the_plan_reserves_a_fine_tuning_round_and_one_more_evaluation(site: Site) -> None:
    plain, personalised = privacy_plan(_config("none"), site), privacy_plan(_config(), site)
    assert (plain.rounds, plain.evaluation_releases) == (ROUNDS, 1)
    assert (personalised.rounds, personalised.evaluation_releases) == (ROUNDS + 1, 2)
    # More releases in the same budget: each is noisier, and all of them fit the target.
    assert personalised.noise_multiplier > plain.noise_multiplier
    planned = independent_epsilon(personalised.planned_history(), personalised.delta)
    assert planned <= personalised.target_epsilon


def test_personalisation_is_booked_and_its_epsilon_matches_the_oracle(
    site: Site, ledger: PrivacyLedger
) -> None:
    config = _config()
    weights = _federate(config, site, ledger, "run-p")
    with pytest.raises(PrivacyBudgetExceededError, match="refuses to train"):
        # Training never eats the fine-tuning's share: a retried round does not fit.
        train_round(
            weights, config, site, plan=None, ledger=ledger, run_id="run-p", server_round=ROUNDS
        )
    release = evaluate_and_personalise(
        weights, config, site, plan=None, ledger=ledger, run_id="run-p", server_round=ROUNDS
    )
    assert release.personalisation_refused == ""
    entries = ledger.history(site.ledger_key, label=site.dataset)
    kinds = [(e.server_round, e.is_evaluation) for e in entries]
    assert kinds == [(1, False), (2, False), (3, False), (3, True), (4, False), (4, True)]
    plan = privacy_plan(config, site)
    assert entries[4].history_entry() == plan.round_entry()  # booked like a training round
    assert set(release.reservations) == {entries[3].id, entries[4].id, entries[5].id}
    oracle = independent_epsilon([e.history_entry() for e in entries], config.privacy.delta)
    assert release.metrics["epsilon"] == pytest.approx(oracle, rel=1e-9)
    assert oracle <= config.privacy.target_epsilon
    assert release.metrics["evaluation-epsilon"] == pytest.approx(
        independent_epsilon([e.history_entry() for e in entries if e.is_evaluation], 1e-5)
    )
    # Metrics whose noisy denominator came out <= 0 are left out, so check kinds, not names.
    personalised = {k for k in release.metrics if k.startswith(PERSONALISED_PREFIX)}
    assert personalised and personalised <= PERSONALISED_METRICS
    assert _global_metrics(release.metrics)  # the global model's, beside them
    with pytest.raises(PrivacyBudgetExceededError, match="refuses to evaluate"):
        evaluate_and_personalise(
            weights, config, site, plan=None, ledger=ledger, run_id="run-p", server_round=ROUNDS
        )


def test_global_evaluations_cannot_take_the_personalised_release(
    site: Site, ledger: PrivacyLedger
) -> None:
    config = _config()
    weights = _initial(config, site)
    evaluate_round(weights, config, site, plan=None, ledger=ledger, run_id="r", server_round=1)
    with pytest.raises(PrivacyBudgetExceededError, match="planned 1 evaluation release"):
        evaluate_round(weights, config, site, plan=None, ledger=ledger, run_id="r", server_round=2)


def test_only_the_last_round_personalises(site: Site, ledger: PrivacyLedger) -> None:
    config = _config(**{"evaluation-rounds": 2})
    release = evaluate_and_personalise(
        _initial(config, site), config, site, plan=None, ledger=ledger, run_id="r", server_round=2
    )
    assert not any(key.startswith(PERSONALISED_PREFIX) for key in release.metrics)
    assert [e.server_round for e in ledger.history(site.ledger_key, label=site.dataset)] == [2]


def _spent_dataset(config: RunConfig, site: Site, ledger: PrivacyLedger) -> None:
    """Book an earlier run's rounds: the dataset affords one evaluation, not personalisation."""
    plan = privacy_plan(config, site)
    delta = config.privacy.delta
    evaluation, fine_tuning = plan.evaluation_entry(), plan.round_entry()
    for rounds in range(1, 50):
        earlier = [fine_tuning] * rounds
        if independent_epsilon([*earlier, evaluation, fine_tuning, evaluation], delta) > 3.0:
            break
    assert independent_epsilon([*earlier, evaluation], delta) <= 3.0
    for server_round in range(1, rounds + 1):
        ledger.reserve(
            site.ledger_key,
            label=site.dataset,
            run_id="earlier",
            server_round=server_round,
            noise_multiplier=fine_tuning[0],
            sample_rate=fine_tuning[1],
            steps=fine_tuning[2],
            delta=delta,
            cap_epsilon=3.0,
        )


def test_a_refused_fine_tuning_keeps_the_global_metrics_with_the_reason(
    site: Site, ledger: PrivacyLedger
) -> None:
    config = _config()
    _spent_dataset(config, site, ledger)
    release = evaluate_and_personalise(
        _initial(config, site), config, site, plan=None, ledger=ledger, run_id="r", server_round=3
    )
    assert "refuses" in release.personalisation_refused
    assert "past the hospital's cap" in release.personalisation_refused
    assert _global_metrics(release.metrics) and release.reservation is not None
    assert not any(key.startswith(PERSONALISED_PREFIX) for key in release.metrics)
    ours = [e for e in ledger.history(site.ledger_key, label=site.dataset) if e.run_id == "r"]
    assert [(e.server_round, e.is_evaluation) for e in ours] == [(3, True)]
    assert release.reservations == (release.reservation,)
    assert not model_path(site.state, "r").exists()


def test_the_session_audits_a_refused_fine_tuning_and_releases_the_global_metrics(
    tmp_path: Path,
) -> None:
    config = _config(**{"out-dir": str(tmp_path)})
    instruction = {**config.to_flat(), "server-round": ROUNDS}
    session = HospitalSession({NodeConfigKey.PARTITION_ID: 0}, instruction, "run-s", BuiltinData())
    site_state = simulated_state(config, "hospital-1")
    site_state.mkdir(parents=True, exist_ok=True)
    from fedcare.client.ledger import ledger_path
    from fedcare.client.warm_cache import RUN_CACHE

    site = RUN_CACHE.site({NodeConfigKey.PARTITION_ID: 0}, config, "run-s", BuiltinData())
    with PrivacyLedger(ledger_path(site.state)) as ledger:
        _spent_dataset(config, site, ledger)
    release = session.evaluate(_initial(config, site), plan=None)
    assert release.personalisation_refused and _global_metrics(release.metrics)
    audit = site_state / AUDIT_FILE
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    released = events[-1]["fields"]
    assert events[-1]["event"] == "update-released"
    assert "past the hospital's cap" in released["personalisation_refused"]
    with PrivacyLedger(ledger_path(site.state)) as ledger:
        ours = [
            e for e in ledger.history(site.ledger_key, label=site.dataset) if e.run_id == "run-s"
        ]
    assert [e.status.value for e in ours] == ["released"]


def test_the_personalised_model_never_appears_in_a_reply(site: Site, ledger: PrivacyLedger) -> None:
    config = _config("all")
    weights = _initial(config, site)
    release = evaluate_and_personalise(
        weights, config, site, plan=None, ledger=ledger, run_id="run-w", server_round=ROUNDS
    )
    assert any(key.startswith(PERSONALISED_PREFIX) for key in release.metrics)
    kept = load_file(str(model_path(site.state, "run-w")))
    assert model_path(site.state, "run-w").stat().st_mode & 0o777 == 0o600
    tuned = np.concatenate([array.ravel() for array in kept.values()])
    assert not np.allclose(tuned, np.concatenate([w.ravel() for w in weights]))
    # The reply is scalars on the egress guard's list: no array, no weight, no per-row value.
    for key, value in release.metrics.items():
        assert key in ALLOWED_METRICS or NOISY_SUM_KEY.fullmatch(key), key
        assert isinstance(value, str | int | float)
    values = {float(v) for v in release.metrics.values() if not isinstance(v, str)}
    assert not values & {float(x) for x in tuned}


@pytest.mark.parametrize(("layers", "trained"), [("head", {"weight", "bias"}), ("bias", {"bias"})])
def test_only_the_chosen_layers_change(
    layers: str, trained: set[str], site: Site, ledger: PrivacyLedger
) -> None:
    config = _config(layers)
    model = fresh_model(config, site)
    start = ModelLayout.of(model).named(get_weights(model))
    run_id = f"run-{layers}"
    evaluate_and_personalise(
        list(start.values()),
        config,
        site,
        plan=None,
        ledger=ledger,
        run_id=run_id,
        server_round=ROUNDS,
    )
    kept = load_file(str(model_path(site.state, run_id)))
    assert set(kept) == set(start)
    changed = {
        name.rsplit(".", 1)[-1] for name in kept if not np.array_equal(kept[name], start[name])
    }
    assert changed == trained


def test_the_report_shows_personalised_metrics_beside_the_global_ones() -> None:
    from rich.console import Console

    from fedcare.server.report import hospital_finals
    from fedcare.server.run_record import RunRecord
    from fedcare.tables import personalised_table

    record = RunRecord()
    record.round(3).hospital("h1").evaluation = {"accuracy": 0.5, "personalised-accuracy": 0.8}
    record.round(3).hospital("h2").evaluation = {"accuracy": 0.7}  # refused to personalise
    summary = {
        "final_per_hospital": hospital_finals(record),
        "personalised_per_hospital": hospital_finals(record, personalised=True),
        "config": {"personalise-layers": "head"},
    }
    assert summary["final_per_hospital"] == {"h1": {"accuracy": 0.5}, "h2": {"accuracy": 0.7}}
    assert summary["personalised_per_hospital"] == {"h1": {"accuracy": 0.8}}
    console = Console(width=120, record=True)
    console.print(personalised_table(summary, ["accuracy"]))
    text = console.export_text()
    assert "personalised" in text and "0.800" in text and "not personalised" in text


def test_a_run_without_dp_personalises_with_exact_metrics_and_books_nothing(
    site: Site, ledger: PrivacyLedger
) -> None:
    config = _config("bias", **{"differential-privacy": False})
    release = evaluate_and_personalise(
        _initial(config, site), config, site, plan=None, ledger=ledger, run_id="n", server_round=3
    )
    assert {"personalised-accuracy", "personalised-loss", "accuracy"} <= set(release.metrics)
    assert release.reservations == () and ledger.history(site.ledger_key) == []
    assert model_path(site.state, "n").exists()
