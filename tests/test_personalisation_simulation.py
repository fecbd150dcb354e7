"""`fedcare simulate --set personalise-layers=head`: personalised metrics beside the global ones."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.client.site import SIMULATED_STATE_DIR

pytestmark = pytest.mark.integration


def test_a_personalised_simulation_reports_both_within_the_target(tmp_path: Path) -> None:
    out = tmp_path / "run"
    arguments = ["simulate", "--out", str(out), "--rounds", "2", "--set", "device=cpu"]
    result = CliRunner().invoke(app, [*arguments, "--set", "personalise-layers=head"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"]["aggregated"] == [1, 2]
    hospitals = set(summary["final_per_hospital"])
    assert hospitals and set(summary["personalised_per_hospital"]) == hospitals
    # DP metrics whose noisy denominator came out <= 0 are left out: check kinds, not names.
    for name in hospitals:
        personalised = summary["personalised_per_hospital"][name]
        assert personalised and all(0 <= value <= 1 for value in personalised.values())
        assert not any(
            key.startswith("personalised-") for key in summary["final_per_hospital"][name]
        )
    privacy = summary["privacy"]
    assert set(privacy["per_hospital"]) == hospitals
    assert all(0 < spent <= privacy["target_epsilon"] for spent in privacy["per_hospital"].values())
    # The personalised models stay in the hospitals' own folders, never in the aggregator's.
    kept = sorted(out.rglob("personalised/*.safetensors"))
    assert len(kept) == len(hospitals)
    assert all(SIMULATED_STATE_DIR in path.relative_to(out).parts for path in kept)
