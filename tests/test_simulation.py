"""A real Flower simulation (Ray backend) with DP-SGD and SecAgg+, end to end."""

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from fedcare.client.ledger import PrivacyLedger
from fedcare.shared.config.run_config import RunConfig
from tests.privacy_oracle import gaussian_epsilon, independent_epsilon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict, Path]:
    from fedcare.simulations.simulate import simulate

    out = tmp_path_factory.mktemp("sim") / "run"
    config = RunConfig.from_flat({"num-server-rounds": 2, "device": "cpu", "out-dir": str(out)})
    return config, simulate(config), out


def test_run_writes_every_report_file(run: tuple[RunConfig, dict, Path]) -> None:
    _, summary, out = run
    for name in [
        "config.json",
        "metrics.json",
        "metrics.csv",
        "summary.json",
        "report.png",
        "model.safetensors",
    ]:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "round-001.safetensors",
        "round-002.safetensors",
    ]
    assert summary["status"] == "completed"
    assert summary["config"]["out-dir"] == str(out)
    for row in ("federated", "pooled", "local_only"):
        assert set(summary["final"][row]) == {
            "auroc",
            "accuracy",
            "sensitivity",
            "specificity",
            "f1",
            "brier",
        }


def test_secure_aggregation_ran_and_every_round_aggregated(
    run: tuple[RunConfig, dict, Path],
) -> None:
    _, summary, _ = run
    assert summary["secure_aggregation"]["enabled"] is True
    assert summary["rounds"]["aggregated"] == [1, 2]
    assert summary["warnings"] == [] and summary["errors"] == []


def test_the_global_model_improved(run: tuple[RunConfig, dict, Path]) -> None:
    _, summary, out = run
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    initial, final = rounds[0]["test_metrics"], rounds[-1]["test_metrics"]
    assert rounds[0]["round"] == 0
    assert final["auroc"] > initial["auroc"] + 0.1
    assert final["brier"] < initial["brier"]
    assert summary["final"]["federated"] == final
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == {"weight", "bias"}


def test_epsilon_per_hospital_matches_an_independent_rdp_computation(
    run: tuple[RunConfig, dict, Path],
) -> None:
    """Training and evaluation releases, recomputed from what each hospital booked."""
    config, summary, out = run
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    privacy, delta = summary["privacy"], config.privacy.delta
    assert sorted(privacy["per_hospital"]) == ["hospital-1", "hospital-2", "hospital-3"]
    assert privacy["delta"] == delta
    for name, reported in privacy["per_hospital"].items():
        trains = [r["hospitals"][name]["train"] for r in rounds if name in r["hospitals"]]
        trains = [t for t in trains if t]
        steps = sum(int(t["steps"]) for t in trains)
        training = [(trains[0]["noise-multiplier"], trains[0]["sample-rate"], steps)]
        with PrivacyLedger(out / "hospitals" / name / "privacy-ledger.db") as ledger:
            (dataset,) = ledger.datasets()
            entries = ledger.history(dataset.dataset_id)
        evaluations = [entry.history_entry() for entry in entries if entry.is_evaluation]
        assert len(evaluations) == config.privacy.evaluation_rounds
        assert gaussian_epsilon(evaluations[0][0], len(evaluations), delta) == pytest.approx(
            config.privacy.evaluation_epsilon, abs=0.01
        )
        total = independent_epsilon(training + evaluations, delta)
        assert reported == pytest.approx(total, rel=1e-9)
        assert entries[-1].epsilon_after == pytest.approx(total, rel=1e-9)
        assert privacy["per_hospital_training"][name] == pytest.approx(
            independent_epsilon(training, delta), rel=1e-9
        )
        assert privacy["per_hospital_evaluation"][name] == pytest.approx(
            independent_epsilon(evaluations, delta), rel=1e-9
        )
        assert privacy["per_hospital_dataset"][name] == pytest.approx(total, rel=1e-9)
        assert reported <= config.privacy.target_epsilon
        assert all("train-loss" not in t for t in trains)


def test_hospitals_evaluate_once_and_the_federation_pools_their_noisy_sums(
    run: tuple[RunConfig, dict, Path],
) -> None:
    _, _, out = run
    rounds = {r["round"]: r for r in json.loads((out / "metrics.json").read_text())["rounds"]}
    assert rounds[1]["federated_metrics"] == {}  # round 1 asked no hospital to evaluate
    final = rounds[2]
    # Pooled noisy sums give every metric of the task, but DP noise may, rarely, push a
    # metric's denominator to zero or below: that metric is then left out, never made up.
    released = set(final["federated_metrics"])
    assert released <= {"auroc", "accuracy", "sensitivity", "specificity", "f1", "brier"}
    assert {"auroc", "accuracy"} <= released
    for hospital in final["hospitals"].values():
        # One hospital's noisy counts (about 37 held-out rows, noise sd 4.1 per cell) can
        # come out at or below zero: a metric whose denominator does is left out, never
        # made up. The exact loss never leaves.
        assert "loss" not in hospital["evaluation"]
        assert set(hospital["evaluation"]) & set(final["federated_metrics"])
        assert not any(key.startswith("noisy-sum-") for key in hospital["evaluation"])
