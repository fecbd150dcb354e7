"""Thirty small virtual hospitals with DP-SGD and SecAgg+, run as a user runs them.

The run completes with every hospital's update in every round, SecAgg+ working
with neighbourhoods smaller than the federation (21 of 30), and the memory of
the whole process tree (driver, Ray, actors) stays flat from round to round:
nothing accumulates per round per hospital.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedcare.server.run_directory import LOG_FILE
from fedcare.simulations.process_tree import TreeSampler, TreeSamples, supported
from fedcare.simulations.scale_benchmark import round_windows

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not supported(), reason="samples memory from Linux's /proc"),
]

HOSPITALS = 30
ROUNDS = 4
FLAT_WITHIN_BYTES = 150 * 2**20
"""How far a later round's peak may rise above the second round's: allocator and Ray
noise, far below what even a kilobyte per hospital per round would add up to over
a long run (the first round is left out: it warms the hospitals' workers up)."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], TreeSamples]:
    out = tmp_path_factory.mktemp("many-hospitals") / "run"
    command = [
        sys.executable,
        "-m",
        "fedcare",
        "simulate",
        "--scenario",
        "many-hospitals",
        "--hospitals",
        str(HOSPITALS),
        "--rounds",
        str(ROUNDS),
        # One local epoch: the test is about many hospitals, not about training longer.
        "--set",
        "local-epochs=1",
        "--out",
        str(out),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        with TreeSampler(process.pid) as sampler:
            stdout, stderr = process.communicate(timeout=840)
    assert process.returncode == 0, (stdout + stderr).decode(errors="replace")[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return out, summary, sampler.readings


def test_every_round_aggregates_every_hospital_under_dp_and_secagg(
    run: tuple[Path, dict[str, Any], TreeSamples],
) -> None:
    out, summary, _ = run
    assert summary["status"] == "completed"
    assert summary["warnings"] == [] and summary["errors"] == []
    assert summary["rounds"]["aggregated"] == list(range(1, ROUNDS + 1))
    assert summary["secure_aggregation"]["enabled"] is True
    spent = summary["privacy"]["per_hospital"]
    assert len(spent) == HOSPITALS
    assert all(0 < epsilon <= summary["privacy"]["target_epsilon"] for epsilon in spent.values())
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert all(len(record["hospitals"]) == HOSPITALS for record in rounds[1:])


def test_memory_stays_flat_from_round_to_round(
    run: tuple[Path, dict[str, Any], TreeSamples],
) -> None:
    out, _, readings = run
    windows = round_windows((out / LOG_FILE).read_text())
    assert sorted(windows) == list(range(1, ROUNDS + 1))
    peaks = [readings.peak_between(*windows[r]) for r in sorted(windows)]
    assert all(peak > 0 for peak in peaks), peaks
    growth = [peak - peaks[1] for peak in peaks[2:]]
    assert max(growth) <= FLAT_WITHIN_BYTES, [f"{peak / 2**20:.0f} MiB" for peak in peaks]
