"""A hospital's round: updates are checked before release, and replies carry aggregates only."""

import numpy as np
import pytest

from fedcare.client.evaluation_round import evaluate_round
from fedcare.client.hospital import (
    check_update,
    fresh_model,
    parse_instruction,
    train_round,
)
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.site import Site, load_site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import DataError, InvalidUpdateError
from fedcare.shared.private_metrics import SCORE_BINS
from fedcare.shared.serialization import ModelLayout, get_weights


def _initial(config: RunConfig, site: Site) -> list[np.ndarray]:
    return get_weights(fresh_model(config, site))


def _train(weights: list[np.ndarray], config: RunConfig, site: Site, ledger: PrivacyLedger):  # type: ignore[no-untyped-def]
    return train_round(
        weights, config, site, plan=None, ledger=ledger, run_id="run-1", server_round=1
    )


def test_round_returns_a_delta_of_the_model_layout(
    config: RunConfig, site: Site, ledger: PrivacyLedger
) -> None:
    weights = _initial(config, site)
    update = _train(weights, config, site, ledger)
    assert [d.shape for d in update.delta] == [w.shape for w in weights]
    assert update.num_examples == len(site.data.train)
    assert set(update.metrics) == {
        "hospital",
        "epsilon",
        "training-epsilon",
        "evaluation-epsilon",
        "dataset-epsilon",
        "delta",
        "noise-multiplier",
        "sample-rate",
        "steps",
    }
    assert [e.server_round for e in ledger.history(site.dataset)] == [1]
    assert all(not isinstance(v, np.ndarray) for v in update.metrics.values())


def test_malformed_global_model_is_refused_with_the_parameter_named(
    config: RunConfig, site: Site, ledger: PrivacyLedger
) -> None:
    weights = _initial(config, site)
    with pytest.raises(InvalidUpdateError, match="'weight' has shape"):
        _train([np.zeros((1, 29), np.float32), weights[1]], config, site, ledger)
    weights[1][:] = np.nan
    with pytest.raises(InvalidUpdateError, match="'bias' holds NaN"):
        _train(weights, config, site, ledger)
    assert ledger.history(site.dataset) == []


def test_non_finite_or_out_of_range_updates_are_never_released(config: RunConfig) -> None:
    with pytest.raises(InvalidUpdateError, match="NaN or infinite"):
        check_update([np.array([1.0, np.inf])], config, site="h")
    with pytest.raises(InvalidUpdateError, match="secagg-clipping-range"):
        check_update([np.array([5.0])], config, site="h")
    plaintext = RunConfig.from_flat({"secure-aggregation": False})
    check_update([np.array([5.0])], plaintext, site="h")


def test_evaluation_releases_noisy_metrics_booked_in_the_ledger(
    config: RunConfig, site: Site, ledger: PrivacyLedger
) -> None:
    release = evaluate_round(
        _initial(config, site), config, site, plan=None, ledger=ledger, run_id="r", server_round=3
    )
    metrics = release.metrics
    assert metrics["hospital"] == site.name and metrics["epsilon"] > 0
    # A metric whose noisy denominator came out at or below zero is left out, never made up.
    names = {"auroc", "accuracy", "sensitivity", "specificity", "f1", "brier"}
    assert names & set(metrics) and all(0 <= metrics[name] <= 1 for name in names & set(metrics))
    assert sum(key.startswith("noisy-sum-") for key in metrics) == 2 * SCORE_BINS
    assert "loss" not in metrics and release.loss == 0.0
    assert metrics["epsilon"] == metrics["evaluation-epsilon"] == metrics["dataset-epsilon"]
    assert release.num_examples >= site.min_count
    (entry,) = ledger.history(site.ledger_key)
    assert entry.is_evaluation and (entry.sample_rate, entry.steps) == (1.0, 1)
    assert entry.server_round == 3 and entry.epsilon_after == metrics["epsilon"]


def test_instruction_parsing_ignores_the_round_number(config: RunConfig) -> None:
    assert parse_instruction({**config.to_flat(), "server-round": 4}) == config


def test_site_loading_names_the_missing_node_config(config: RunConfig) -> None:
    from fedcare.simulations.builtin_data import BuiltinData

    with pytest.raises(DataError, match="fedcare hospital start"):
        load_site({}, config, "run-1")
    with pytest.raises(DataError, match="partition-id"):
        load_site({}, config, "run-1", BuiltinData())
    with pytest.raises(DataError, match="does not exist"):
        load_site({"partition-id": 7}, config, "run-1", BuiltinData())
    assert load_site({"partition-id": 0}, config, "run-1", BuiltinData()).name == "hospital-1"


def test_a_simulated_node_config_without_its_simulation_points_to_fedcare_simulate(
    config: RunConfig,
) -> None:
    from fedcare.client.site import site_records

    for read in (
        lambda: load_site({"partition-id": 0}, config, "run-1"),
        lambda: site_records({"partition-id": 0}, config),
    ):
        with pytest.raises(DataError, match="simulations run through `fedcare simulate`$"):
            read()


def test_flwr_run_names_the_apps_given_the_built_in_data() -> None:
    import tomllib
    from importlib import import_module
    from pathlib import Path

    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    components = pyproject["tool"]["flwr"]["app"]["components"]
    apps = {}
    for kind, reference in components.items():
        module, name = reference.split(":")
        apps[kind] = getattr(import_module(module), name)
    assert isinstance(apps["serverapp"], ServerApp)
    assert isinstance(apps["clientapp"], ClientApp)


def test_layout_check_counts_arrays() -> None:
    layout = ModelLayout(names=("w",), shapes=((2,),))
    with pytest.raises(InvalidUpdateError, match="2 arrays for a model with 1"):
        layout.check([np.zeros(2), np.zeros(2)], what="x")
