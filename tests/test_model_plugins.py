"""Bring your own model: installed plugins only, in the run's version, checked for DP-SGD.

The worked example plugin (examples/fedcare-example-models) is installed into the
virtual environment by ``make install``, as a hospital installs any plugin.
"""

import json
from pathlib import Path

import pytest

from fedcare.client.hospital import fresh_model, train_round
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.site import Site, load_site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import TrainingSettings
from fedcare.shared.data import InputKind
from fedcare.shared.errors import ConfigError
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.model_plugins import ModelPluginError, installed_plugins
from fedcare.shared.run_model import build_run_model
from fedcare.shared.serialization import get_weights
from fedcare.shared.tasks import Task, TaskKind
from fedcare.simulations.builtin_data import BuiltinData
from fedcare.simulations.federation import build_federation

EXAMPLE = "fedcare-example-models==0.1.0"
PLUGIN = {"model": "residual-mlp", "model-version": "0.1.0"}
BATCHNORM = {"model": "small-vgg-bn", "model-version": "0.1.0"}
IMAGES = {"dataset": "synthetic-images", "device": "cpu", "num-server-rounds": 1}


def _build(training: TrainingSettings, shape: tuple[int, ...], kind: InputKind):  # type: ignore[no-untyped-def]
    return build_run_model(
        training,
        input_shape=shape,
        input_kind=kind,
        task=Task(TaskKind.BINARY),
        seed=0,
        private=True,
        party="st-mary",
    )


def test_the_example_plugin_is_installed_through_its_entry_points() -> None:
    assert installed_plugins() == {"residual-mlp": EXAMPLE, "small-vgg-bn": EXAMPLE}
    model = _build(
        TrainingSettings(model="residual-mlp", model_version="0.1.0"), (30,), InputKind.TABLE
    )
    assert model.spec.source == EXAMPLE
    assert (
        model.describe(TrainingSettings(model="residual-mlp", model_version="0.1.0"))["source"]
        == EXAMPLE
    )


def test_a_plugin_name_needs_its_package_version() -> None:
    with pytest.raises(ConfigError, match="model-version"):
        RunConfig.from_flat({"model": "residual-mlp"})
    with pytest.raises(ConfigError, match="'model'"):
        RunConfig.from_flat({"model": "../../evil.py", "model-version": "1"})


def test_a_hospital_with_another_version_refuses_naming_both_and_audits_it(
    tmp_path: Path,
) -> None:
    from fedcare.client.session import HospitalSession
    from fedcare.client.site import simulated_state
    from fedcare.client.state_files import AUDIT_FILE

    config = RunConfig.from_flat({**PLUGIN, "model-version": "0.2.0", "out-dir": str(tmp_path)})
    instruction = {**config.to_flat(), "server-round": 1}
    node_config = {NodeConfigKey.PARTITION_ID: 0}
    session = HospitalSession(node_config, instruction, "run-7", BuiltinData())
    with pytest.raises(ModelPluginError, match=r"0\.1\.0 here, but the run needs version 0\.2\.0"):
        session.train([], plan=None)
    audit = simulated_state(config, "hospital-1") / AUDIT_FILE
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert events[-1]["event"] == "round-refused"
    assert events[-1]["fields"]["error"] == "ModelPluginError"


def test_a_hospital_without_the_plugin_refuses_and_imports_nothing(tmp_path: Path) -> None:
    import sys

    config = RunConfig.from_flat(
        {"model": "os.system", "model-version": "1.0", "out-dir": str(tmp_path)}
    )
    modules = set(sys.modules)
    with pytest.raises(ModelPluginError, match="'os.system' is not installed here"):
        load_site({NodeConfigKey.PARTITION_ID: 0}, config, "run-1", BuiltinData())
    assert set(sys.modules) - modules <= {m for m in sys.modules if m.startswith("fedcare")}


def test_a_batchnorm_model_is_refused_with_each_layer_and_its_fix_named() -> None:
    with pytest.raises(ConfigError) as refused:
        _build(
            TrainingSettings(model="small-vgg-bn", model_version="0.1.0"),
            (1, 28, 28),
            InputKind.IMAGES,
        )
    message = str(refused.value)
    assert "layer '1' (BatchNorm2d)" in message and "layer '5' (BatchNorm2d)" in message
    assert "GroupNorm" in message and "fix-model = true" in message


def test_without_dp_a_batchnorm_model_is_built_as_it_is() -> None:
    built = build_run_model(
        TrainingSettings(model="small-vgg-bn", model_version="0.1.0"),
        input_shape=(1, 28, 28),
        input_kind=InputKind.IMAGES,
        task=Task(TaskKind.BINARY),
        seed=0,
        private=False,
        party="st-mary",
    )
    assert built.fixed_layers == ()


@pytest.fixture(scope="module")
def image_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    config = RunConfig.from_flat(IMAGES)
    hospital = build_federation(config.data).hospitals[0]
    return Site(
        name=hospital.name,
        task=build_federation(config.data).task,
        data=hospital.site,
        state=tmp_path_factory.mktemp("image-site"),
        dataset=hospital.name,
    )


def test_fix_model_replaces_batchnorm_records_it_and_trains_a_dp_round(
    image_site: Site, tmp_path: Path
) -> None:
    config = RunConfig.from_flat({**IMAGES, **BATCHNORM, "fix-model": True, "local-epochs": 1})
    built = build_run_model(
        config.training,
        input_shape=image_site.data.train.input_shape,
        input_kind=InputKind.IMAGES,
        task=image_site.task,
        seed=0,
        private=True,
        party="the aggregator",
    )
    assert built.fixed_layers == (
        "1: BatchNorm2d(16) -> GroupNorm(16 groups, 16 channels)",
        "5: BatchNorm2d(32) -> GroupNorm(32 groups, 32 channels)",
    )
    assert built.describe(config.training)["fixed_layers"] == list(built.fixed_layers)
    with PrivacyLedger(tmp_path / "ledger.db") as ledger:
        update = train_round(
            get_weights(built.module),
            config,
            image_site,
            plan=None,
            ledger=ledger,
            run_id="bn-run",
            server_round=1,
        )
    assert update.metrics["steps"] >= 1 and update.metrics["epsilon"] > 0


def test_resnet18_trains_one_dp_round_on_small_images(image_site: Site, tmp_path: Path) -> None:
    config = RunConfig.from_flat(
        {**IMAGES, "model": "resnet18", "local-epochs": 1, "batch-size": 64}
    )
    model = fresh_model(config, image_site)
    assert sum(p.numel() for p in model.parameters()) > 11_000_000  # ResNet-18, 1 channel
    weights = get_weights(model)
    with PrivacyLedger(tmp_path / "ledger.db") as ledger:
        update = train_round(
            weights, config, image_site, plan=None, ledger=ledger, run_id="r18", server_round=1
        )
    assert [d.shape for d in update.delta] == [w.shape for w in weights]
    assert update.metrics["epsilon"] > 0 and update.metrics["noise-multiplier"] > 0
    assert any(float(abs(d).max()) > 0 for d in update.delta)


@pytest.mark.integration
def test_the_example_plugin_trains_two_dp_secagg_rounds(tmp_path: Path) -> None:
    from fedcare.simulations.simulate import simulate

    config = RunConfig.from_flat(
        {**PLUGIN, "num-server-rounds": 2, "device": "cpu", "out-dir": str(tmp_path / "run")}
    )
    summary = simulate(config)
    assert summary["status"] == "completed", summary["errors"]
    assert summary["rounds"]["aggregated"] == [1, 2]
    assert summary["privacy"]["differential_privacy"] and summary["secure_aggregation"]["enabled"]
    assert summary["model"]["source"] == EXAMPLE and summary["model"]["name"] == "residual-mlp"
    noise = summary["privacy"]["noise_multiplier_per_hospital"]
    assert len(noise) == 3 and all(value > 0 for value in noise.values())
    assert set(summary["privacy"]["noise_to_signal_per_hospital"]) == set(noise)
    config_json = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config_json["model-version"] == "0.1.0"
