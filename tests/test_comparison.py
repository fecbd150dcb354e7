"""``simulate --compare``: methods parsed by name, one run per method, one table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.server_optimizer import ServerOptimizerName
from fedcare.shared.errors import ConfigError
from fedcare.simulations.comparison import (
    COMPARISON_JSON,
    COMPARISON_MD,
    DEFAULT_PROXIMAL_MU,
    compare,
    method_config,
    parse_methods,
)


def test_methods_are_parsed_and_checked() -> None:
    assert parse_methods("fedavg, fedyogi+fedprox") == ["fedavg", "fedyogi+fedprox"]
    for bad, says in (
        ("fedavg,sgd", "unknown method 'sgd'"),
        ("fedavg,fedyogi+fedadam", "unknown method 'fedyogi+fedadam'"),
        ("fedavg", "two or more distinct methods"),
        ("fedavg,fedavg", "two or more distinct methods"),
    ):
        with pytest.raises(ConfigError, match="compare") as refused:
            parse_methods(bad)
        assert says in str(refused.value)


def test_each_method_sets_only_its_optimiser_and_mu(tmp_path: Path) -> None:
    base = RunConfig.from_flat({"server-optimizer": "fedadam", "server-learning-rate": 0.03})
    fedavg = method_config(base, "fedavg", tmp_path / "a")
    assert fedavg.server_optimizer.optimizer is ServerOptimizerName.NONE
    assert fedavg.training.proximal_mu == 0
    both = method_config(base, "fedyogi+fedprox", tmp_path / "b")
    assert both.server_optimizer.optimizer is ServerOptimizerName.FEDYOGI
    assert both.server_optimizer.learning_rate == 0.03
    assert both.training.proximal_mu == DEFAULT_PROXIMAL_MU
    assert both.output.out_dir == str(tmp_path / "b")
    assert both.data == base.data and both.privacy == base.privacy


def _summary(accuracies: dict[str, float], epsilon: float) -> dict[str, Any]:
    return {
        "status": "completed",
        "final": {"federated": {"accuracy": 0.7}, "pooled": {"accuracy": 0.9}},
        "final_per_hospital": {n: {"auroc": 0.5, "accuracy": a} for n, a in accuracies.items()},
        "privacy": {"per_hospital": dict.fromkeys(accuracies, epsilon)},
        "rounds": {"planned": 2, "aggregated": [1, 2]},
    }


def test_the_table_puts_methods_side_by_side(tmp_path: Path) -> None:
    runs: list[RunConfig] = []

    def simulate(config: RunConfig) -> dict[str, Any]:
        runs.append(config)
        skewed = 0.5 if config.server_optimizer.optimizer is ServerOptimizerName.NONE else 0.7
        return _summary({"hospital-1": 0.8, "hospital-2": skewed}, 2.9)

    config = RunConfig().with_out_dir(str(tmp_path / "cmp"))
    comparison = compare(config, ["fedavg", "fedyogi"], simulate)
    assert [r.output.out_dir for r in runs] == [
        str(tmp_path / "cmp" / m) for m in ("fedavg", "fedyogi")
    ]
    assert {r.data.seed for r in runs} == {config.data.seed}
    fedavg, fedyogi = comparison["rows"]
    assert fedavg["metric"] == "accuracy"
    assert fedavg["mean"] == pytest.approx(0.65) and fedyogi["mean"] == pytest.approx(0.75)
    assert fedyogi["max_epsilon"] == 2.9
    table = (tmp_path / "cmp" / COMPARISON_MD).read_text()
    assert "| fedavg | 0.800 | 0.500 | 0.650 | 0.700 | 2.900 | completed |" in table
    assert "- baseline pooled: test accuracy 0.900" in table
    assert (
        json.loads((tmp_path / "cmp" / COMPARISON_JSON).read_text())["rows"] == comparison["rows"]
    )


def test_a_run_that_never_aggregated_is_not_reported_as_completed(tmp_path: Path) -> None:
    def simulate(config: RunConfig) -> dict[str, Any]:
        summary = _summary({"hospital-1": 0.8}, 1.0)
        if config.server_optimizer.optimizer is ServerOptimizerName.FEDYOGI:
            summary |= {"final_per_hospital": {}, "rounds": {"planned": 2, "aggregated": []}}
        return summary

    config = RunConfig().with_out_dir(str(tmp_path / "cmp"))
    _, fedyogi = compare(config, ["fedavg", "fedyogi"], simulate)["rows"]
    assert fedyogi["status"] == "0 of 2 rounds aggregated" and fedyogi["mean"] is None
    assert fedyogi["metric"] == "accuracy" and fedyogi["test"] == 0.7  # from the test set


def test_an_existing_folder_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "something").write_text("kept")
    with pytest.raises(ConfigError):
        compare(RunConfig().with_out_dir(str(tmp_path / "cmp")), ["fedavg", "fedprox"], dict)  # type: ignore[arg-type]
    assert (tmp_path / "cmp" / "something").read_text() == "kept"


@pytest.mark.integration
def test_simulate_compare_runs_each_method_for_real(tmp_path: Path) -> None:
    """Two real simulations (DP-SGD, SecAgg+), one with a server optimiser and FedProx."""
    out = tmp_path / "cmp"
    command = [sys.executable, "-m", "fedcare", "simulate", "--rounds", "2", "--out", str(out)]
    command += ["--compare", "fedavg,fedyogi+fedprox"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    comparison = json.loads((out / COMPARISON_JSON).read_text())
    for row in comparison["rows"]:
        assert row["status"] == "completed"
        assert len(row["per_hospital"]) == 3 and row["mean"] is not None
        assert 0 < row["max_epsilon"] <= 3.0 + 1e-9
    yogi = out / "fedyogi+fedprox"
    assert (yogi / "checkpoints" / "round-002-optimizer.safetensors").is_file()
    assert json.loads((yogi / "config.json").read_text())["proximal-mu"] > 0
    assert "| fedyogi+fedprox |" in done.stdout
