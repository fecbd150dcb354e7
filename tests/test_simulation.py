"""A real Flower simulation (Ray backend) with DP-SGD and SecAgg+, end to end."""

import json
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from fedcare.shared.config import RunConfig
from tests.test_privacy import independent_epsilon

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
    config, summary, out = run
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    per_hospital = summary["privacy"]["per_hospital"]
    assert sorted(per_hospital) == ["hospital-1", "hospital-2", "hospital-3"]
    assert summary["privacy"]["delta"] == config.privacy.delta
    for name, reported in per_hospital.items():
        trains = [r["hospitals"][name]["train"] for r in rounds if name in r["hospitals"]]
        steps = sum(int(t["steps"]) for t in trains)
        expected = independent_epsilon(
            trains[0]["noise-multiplier"], trains[0]["sample-rate"], steps, config.privacy.delta
        )
        assert reported == pytest.approx(expected, rel=1e-9)
        assert reported <= config.privacy.target_epsilon
        assert [t["epsilon"] for t in trains] == sorted(t["epsilon"] for t in trains)
