"""Run-config parsing: defaults match pyproject, every bad setting is refused by name."""

import tomllib
from pathlib import Path

import pytest

from fedcare.shared.config.run_config import RunConfig, config_keys
from fedcare.shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_equal_dataclass_defaults() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == RunConfig().to_flat()


def test_flat_round_trip() -> None:
    config = RunConfig.from_flat(
        {"epsilon": 1.5, "model": "mlp", "hospitals": 5, "partition": "iid"}
    )
    assert RunConfig.from_flat(config.to_flat()) == config
    assert list(config.to_flat()) == config_keys()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"hospitals": 2}, "hospitals"),
        ({"hospitals": 0, "secure-aggregation": False}, "hospitals"),
        ({"num-server-rounds": 0}, "num-server-rounds"),
        ({"model": "resnet-9000"}, "model"),
        ({"partition": "random"}, "partition"),
        ({"dirichlet-alpha": 0.0}, "dirichlet-alpha"),
        ({"dirichlet-alpha": -2.0}, "dirichlet-alpha"),
        ({"local-epochs": 0}, "local-epochs"),
        ({"batch-size": 0}, "batch-size"),
        ({"learning-rate": 0.0}, "learning-rate"),
        ({"max-grad-norm": 0.0}, "max-grad-norm"),
        ({"round-timeout": 0.0}, "round-timeout"),
        ({"test-fraction": 1.0}, "test-fraction"),
        ({"eval-fraction": 0.0}, "eval-fraction"),
        ({"secagg-num-shares": 1.5}, "secagg-num-shares"),
        ({"secagg-reconstruction-threshold": 0.0}, "secagg-reconstruction-threshold"),
        ({"secagg-clipping-range": 0.0}, "secagg-clipping-range"),
        ({"secagg-max-weight": 0.0}, "secagg-max-weight"),
        ({"device": "tpu"}, "device"),
        ({"min-hospitals": 4}, "min-hospitals"),
        ({"min-hospitals": 1}, "min-hospitals"),
        ({"min-hospitals": 0, "secure-aggregation": False}, "min-hospitals"),
        ({"hospitals": 3.5}, "hospitals"),
        ({"hospitals": True}, "hospitals"),
        ({"epsilon": "three"}, "epsilon"),
        ({"differential-privacy": "no"}, "differential-privacy"),
        ({"epsilonn": 3.0}, "epsilonn"),
    ],
)
def test_bad_setting_is_refused_by_name(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_flat(overrides)
    assert caught.value.key == key
    assert f"'{key}'" in str(caught.value)


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="did you mean 'epsilon'"):
        RunConfig.from_flat({"epsilonn": 3.0})


def test_secagg_needs_three_hospitals_but_plaintext_runs_with_two() -> None:
    with pytest.raises(ConfigError, match="SecAgg\\+ needs at least 3 hospitals"):
        RunConfig.from_flat({"hospitals": 2})
    assert RunConfig.from_flat({"hospitals": 2, "secure-aggregation": False}).data.hospitals == 2


def test_weakened_protections_are_named() -> None:
    assert RunConfig().weakened_protections() == []
    weakened = RunConfig.from_flat({"differential-privacy": False, "secure-aggregation": False})
    assert len(weakened.weakened_protections()) == 2
