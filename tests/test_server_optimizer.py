"""Server optimisers: hand-computed updates, and a FedYogi state that survives a resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.resume import (
    ProgressWriter,
    load_resume_point,
    resume_optimizer_state,
    resume_weights,
)
from fedcare.server.run_directory import RunDirectory
from fedcare.server.run_record import RunRecord
from fedcare.server.server_optimizer import OptimizerState, apply_server_update
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.server_optimizer import ServerOptimizerSettings
from fedcare.shared.errors import ConfigError
from fedcare.shared.serialization import ModelLayout

WEIGHTS = [np.array([1.0, 1.0])]
ROUND_1 = [np.array([0.2, -0.4])]
ROUND_2 = [np.array([0.2, 0.0])]


def _policy(name: str) -> ServerOptimizerSettings:
    return RunConfig.from_flat(
        {
            "server-optimizer": name,
            "server-learning-rate": 0.1,
            "server-beta1": 0.5,
            "server-beta2": 0.75,
            "server-tau": 0.1,
        }
    ).server_optimizer


def _two_rounds(name: str) -> tuple[list[np.ndarray], list[np.ndarray], OptimizerState]:
    policy = _policy(name)
    first, state = apply_server_update(policy, OptimizerState(), WEIGHTS, ROUND_1)
    second, state = apply_server_update(policy, state, first, ROUND_2)
    return first, second, state


def test_none_adds_the_mean_update_and_counts_steps() -> None:
    updated, state = apply_server_update(_policy("none"), OptimizerState(), WEIGHTS, ROUND_1)
    np.testing.assert_allclose(updated[0], [1.2, 0.6])
    assert state == OptimizerState(step=1)


def test_fedadagrad_matches_the_hand_computed_update() -> None:
    first, second, state = _two_rounds("fedadagrad")
    # m1 = 0.5 * d1 = [0.1, -0.2]; v1 = d1^2 = [0.04, 0.16]; sqrt(v1) + tau = [0.3, 0.5]
    np.testing.assert_allclose(first[0], [1 + 0.1 * 0.1 / 0.3, 1 - 0.1 * 0.2 / 0.5])
    # m2 = 0.5 * m1 + 0.5 * d2 = [0.15, -0.1]; v2 = v1 + d2^2 = [0.08, 0.16]
    expected = first[0] + 0.1 * np.array([0.15 / (math.sqrt(0.08) + 0.1), -0.1 / 0.5])
    np.testing.assert_allclose(second[0], expected)
    np.testing.assert_allclose(state.first_moment[0], [0.15, -0.1])
    np.testing.assert_allclose(state.second_moment[0], [0.08, 0.16])
    assert state.step == 2


def test_fedyogi_matches_the_hand_computed_update() -> None:
    first, second, state = _two_rounds("fedyogi")
    # v1 = 0 - 0.25 * d1^2 * sign(0 - d1^2) = [0.01, 0.04]; sqrt(v1) + tau = [0.2, 0.3]
    np.testing.assert_allclose(first[0], [1.05, 1 - 0.1 * 0.2 / 0.3])
    # v2 = v1 - 0.25 * d2^2 * sign(v1 - d2^2) = [0.01 + 0.01, 0.04 - 0] = [0.02, 0.04]
    np.testing.assert_allclose(state.second_moment[0], [0.02, 0.04])
    expected = first[0] + 0.1 * np.array([0.15 / (math.sqrt(0.02) + 0.1), -0.1 / 0.3])
    np.testing.assert_allclose(second[0], expected)
    np.testing.assert_allclose(second[0], [1.112132, 0.9], atol=1e-6)


def test_fedadam_matches_the_hand_computed_update() -> None:
    first, second, state = _two_rounds("fedadam")
    # Step 1: eta * sqrt(1 - 0.75) / (1 - 0.5) = 0.1; v1 = 0.25 * d1^2 = [0.01, 0.04]
    np.testing.assert_allclose(first[0], [1.05, 1 - 0.1 * 0.2 / 0.3])
    # Step 2: v2 = 0.75 * v1 + 0.25 * d2^2 = [0.0175, 0.03]; eta * sqrt(1 - 0.75^2) / (1 - 0.5^2)
    np.testing.assert_allclose(state.second_moment[0], [0.0175, 0.03])
    rate = 0.1 * math.sqrt(1 - 0.75**2) / (1 - 0.5**2)
    step = np.array([0.15 / (math.sqrt(0.0175) + 0.1), -0.1 / (math.sqrt(0.03) + 0.1)])
    np.testing.assert_allclose(second[0], first[0] + rate * step)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("server-optimizer", "adam", "must be one of none, fedadam, fedyogi, fedadagrad"),
        ("server-learning-rate", 0.0, "must be a finite number > 0"),
        ("server-beta1", 1.0, "must lie in [0, 1)"),
        ("server-beta2", -0.1, "must lie in [0, 1)"),
        ("server-tau", 0.0, "keeps the step finite"),
    ],
)
def test_bad_server_optimizer_settings_are_refused_by_name(
    key: str, value: float | str, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        RunConfig.from_flat({key: value})
    assert key in str(refused.value)
    assert says in str(refused.value)


def _writers(
    run: Path, config: RunConfig, layout: ModelLayout
) -> tuple[CheckpointWriter, ProgressWriter]:
    run_dir = RunDirectory(run, reopen=run.is_dir())
    progress = ProgressWriter(run_dir, RunRecord(), config=config, layout=layout, ledger_run="r1")
    return CheckpointWriter(run_dir, layout, {"model": "logreg"}), progress


def test_fedyogi_resumes_with_its_moments_identical(tmp_path: Path) -> None:
    config = RunConfig.from_flat({"server-optimizer": "fedyogi", "server-learning-rate": 0.05})
    policy = config.server_optimizer
    layout = ModelLayout(names=("weight", "bias"), shapes=((1, 3), (1,)))
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(1, 3)).astype(np.float32), np.zeros(1, np.float32)]
    deltas = [[rng.normal(size=s).astype(np.float32) for s in layout.shapes] for _ in range(3)]
    state = OptimizerState()
    checkpoints, progress = _writers(tmp_path / "run", config, layout)
    for server_round, delta in enumerate(deltas[:2], start=1):
        weights, state = apply_server_update(policy, state, weights, delta)
        path = checkpoints.save_round(server_round, weights)
        moments = checkpoints.save_optimizer_state(server_round, state)
        progress.round_aggregated(server_round, path, (state.step, moments))
    uninterrupted, uninterrupted_state = apply_server_update(policy, state, weights, deltas[2])

    run_dir = RunDirectory(tmp_path / "run", reopen=True)
    point = load_resume_point(run_dir, config, layout)
    restored = resume_optimizer_state(run_dir, point, config, layout)
    assert restored.step == 2
    for kept, loaded in zip(
        state.first_moment + state.second_moment,
        restored.first_moment + restored.second_moment,
        strict=True,
    ):
        np.testing.assert_array_equal(kept, loaded)
    resumed, resumed_state = apply_server_update(
        policy, restored, resume_weights(run_dir, point, layout), deltas[2]
    )
    for a, b in zip(
        uninterrupted + list(uninterrupted_state.second_moment),
        resumed + list(resumed_state.second_moment),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_resume_without_the_moments_file_is_refused(tmp_path: Path) -> None:
    config = RunConfig.from_flat({"server-optimizer": "fedadam"})
    layout = ModelLayout(names=("bias",), shapes=((2,),))
    checkpoints, progress = _writers(tmp_path / "run", config, layout)
    weights, state = apply_server_update(
        config.server_optimizer,
        OptimizerState(),
        [np.zeros(2, np.float32)],
        [np.ones(2, np.float32)],
    )
    moments = checkpoints.save_optimizer_state(1, state)
    progress.round_aggregated(1, checkpoints.save_round(1, weights), (state.step, moments))
    moments.unlink()
    run_dir = RunDirectory(tmp_path / "run", reopen=True)
    with pytest.raises(ConfigError, match="fedadam state of round 1 cannot be read"):
        resume_optimizer_state(run_dir, load_resume_point(run_dir, config, layout), config, layout)
