"""The parts that let a simulation scale, each on its own (no federation is run).

SecAgg+'s neighbourhood stops growing with the federation; cached accounting
gives Opacus' epsilon to the bit; the simulation's Ray resources count the
actors asked for; the scale benchmark reads round times from a run's log and
memory from the whole process tree.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.secagg import SecureAggregationSettings
from fedcare.shared.errors import ConfigError
from fedcare.shared.privacy import epsilon_spent, plan_dp_sgd
from fedcare.simulations.process_tree import cpu_seconds, supported, tree, tree_resident_bytes
from fedcare.simulations.scale_benchmark import round_windows
from fedcare.simulations.simulate import SimulationResources
from fedcare.tables import epsilon_table


def _flower_shares(fraction: float, sampled: int) -> int:
    """Flower 1.41's shares per key for a float ``num_shares`` (SecAggPlusWorkflow.setup_stage)."""
    shares = round(fraction * sampled)
    if shares < sampled and shares & 1 == 0:
        shares += 1
    return sampled if shares <= 2 else shares


@pytest.mark.parametrize("hospitals", [3, 10, 21, 22, 30, 100, 999, 1000])
def test_the_default_neighbourhood_is_everyone_up_to_21_then_21(hospitals: int) -> None:
    fraction = SecureAggregationSettings().share_fraction(hospitals)
    assert _flower_shares(fraction, hospitals) == min(hospitals, 21)


def test_a_fraction_keeps_flowers_meaning_and_a_count_must_be_whole() -> None:
    assert SecureAggregationSettings(num_shares=0.5).share_fraction(40) == 0.5
    for bad in (1.5, 2.0, 0.0, 21.5):
        with pytest.raises(ConfigError, match="secagg-num-shares"):
            RunConfig.from_flat({"secagg-num-shares": bad})
    assert RunConfig.from_flat({"secagg-num-shares": 7}).secure_aggregation.num_shares == 7


def test_cached_accounting_gives_opacus_epsilon_to_the_bit() -> None:
    from opacus.accountants import RDPAccountant

    rng = random.Random(7)
    for _ in range(10):
        history = [
            (rng.choice([0.8, 1.3, 2.1]), rng.choice([0.1, 0.25, 0.5]), rng.randint(1, 40))
            for _ in range(rng.randint(1, 5))
        ]
        merged: dict[tuple[float, float], int] = {}
        for noise, rate, steps in history:
            merged[(noise, rate)] = merged.get((noise, rate), 0) + steps
        accountant = RDPAccountant()
        accountant.history = [(noise, rate, steps) for (noise, rate), steps in merged.items()]
        assert epsilon_spent(history, delta=1e-5) == accountant.get_epsilon(delta=1e-5)


def test_a_plan_is_searched_once_per_process() -> None:
    settings = {"batch_size": 32, "local_epochs": 1, "rounds": 4, "delta": 1e-5}
    first = plan_dp_sgd(n_samples=91, target_epsilon=2.5, **settings)
    assert plan_dp_sgd(n_samples=91, target_epsilon=2.5, **settings) is first


@pytest.mark.parametrize(("cpus", "actors"), [(2, 2), (2, 3), (16, 6), (4, 1)])
def test_flower_sizes_the_actor_pool_as_asked(cpus: int, actors: int) -> None:
    share = SimulationResources(cpus=cpus, actors=actors).backend_config()["client_resources"]
    assert int(cpus / share["num_cpus"]) == actors  # Flower's pool_size_from_resources
    assert share["num_gpus"] == 0


def test_round_times_come_from_the_runs_log() -> None:
    log = "\n".join(
        [
            "2026-11-30 10:00:00,000 1 INFO fedcare.server.strategy: round 1/2: 3 hospitals asked "
            "to train",
            "2026-11-30 10:00:02,500 1 INFO fedcare.server.strategy: round 1/2: auroc 0.9 | "
            "epsilon spent: hospital-1 1.00",
            "2026-11-30 10:00:02,600 1 INFO fedcare.server.strategy: round 2/2: 3 hospitals asked "
            "to train",
            "2026-11-30 10:00:03,100 1 INFO fedcare.server.strategy: round 2/2: auroc 0.9 | "
            "epsilon spent: hospital-1 1.50",
        ]
    )
    windows = round_windows(log)
    assert [round(end - start, 3) for start, end in windows.values()] == [2.5, 0.5]


@pytest.mark.skipif(not supported(), reason="reads Linux's /proc")
def test_a_process_trees_memory_counts_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in tree(os.getpid())
        assert tree_resident_bytes(os.getpid()) > tree_resident_bytes(child.pid) > 0
        assert cpu_seconds(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()


def test_the_epsilon_table_shows_the_spread_of_many_hospitals() -> None:
    hospitals = {f"hospital-{i}": {"train": {"epsilon": 1.0 + i / 10}} for i in range(1, 31)}
    metrics = {"rounds": [{"round": 1, "hospitals": hospitals}]}
    summary = {"privacy": {"target_epsilon": 3.0, "delta": 1e-5}}
    table = epsilon_table(metrics, summary)
    assert [column.header for column in table.columns] == [
        "round",
        "hospitals",
        "least",
        "median",
        "most",
    ]
    assert [list(column.cells) for column in table.columns][1:] == [
        ["30"],
        ["1.100"],
        ["2.550"],
        ["4.000"],
    ]


def test_the_local_only_row_samples_a_large_federation_with_the_runs_seed() -> None:
    from fedcare.simulations.baselines import LOCAL_ONLY_HOSPITALS, local_only_sample

    hospitals = [f"hospital-{i}" for i in range(1, 101)]
    assert local_only_sample(hospitals[:LOCAL_ONLY_HOSPITALS], seed=1) == hospitals[:20]  # type: ignore[arg-type]
    sample = local_only_sample(hospitals, seed=42)  # type: ignore[arg-type]
    assert len(set(sample)) == LOCAL_ONLY_HOSPITALS
    assert sample == local_only_sample(hospitals, seed=42)  # type: ignore[arg-type]
    assert sample != local_only_sample(hospitals, seed=43)  # type: ignore[arg-type]
