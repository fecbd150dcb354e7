"""Weights in and out: safetensors round trip, atomic run files, light client imports."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcare.server.run_directory import RunDirectory
from fedcare.shared.config.training import ModelName
from fedcare.shared.data import InputKind
from fedcare.shared.errors import InvalidUpdateError
from fedcare.shared.models import MODELS, build_model
from fedcare.shared.serialization import (
    ModelLayout,
    get_weights,
    load_matching_weights,
    load_safetensors,
    save_safetensors,
    set_weights,
)
from fedcare.shared.tasks import Task, TaskKind

INPUT_SHAPES = {
    InputKind.TABLE: (7,),
    InputKind.IMAGES: (1, 28, 28),
    InputKind.SEQUENCES: (12, 5),
    InputKind.INTERACTIONS: (30, 20),
}


def _build(name: ModelName, *, seed: int) -> torch.nn.Module:
    kind = min(MODELS[name].inputs)
    return build_model(
        name,
        input_shape=INPUT_SHAPES[kind],
        input_kind=kind,
        task=Task(TaskKind.BINARY),
        seed=seed,
    )


@pytest.mark.parametrize("name", list(ModelName))
def test_every_registered_model_builds_and_round_trips(name: ModelName, tmp_path: Path) -> None:
    model = _build(name, seed=3)
    again = _build(name, seed=3)
    assert all(
        np.array_equal(a, b) for a, b in zip(get_weights(model), get_weights(again), strict=True)
    )
    layout = ModelLayout.of(model)
    path = tmp_path / "m.safetensors"
    save_safetensors(path, layout.named(get_weights(model)), {"model": name.value})
    loaded = load_safetensors(path)
    other = _build(name, seed=4)
    set_weights(other, [loaded[n] for n in layout.names], what="checkpoint")
    assert all(
        np.array_equal(a, b) for a, b in zip(get_weights(model), get_weights(other), strict=True)
    )
    assert not list(tmp_path.glob("*.tmp"))


def test_run_files_turn_nan_into_null(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path / "run")
    run_dir.write_json("x.json", {"auroc": math.nan, "ok": 1.0, "rows": [math.inf]})
    assert json.loads((tmp_path / "run" / "x.json").read_text()) == {
        "auroc": None,
        "ok": 1.0,
        "rows": [None],
    }


def test_client_app_module_does_not_import_torch() -> None:
    code = "import sys, client.client_app; print('torch' in sys.modules, 'opacus' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "False False"


def test_an_autoencoders_encoder_initialises_the_imaging_classifier(tmp_path: Path) -> None:
    shape, kind = INPUT_SHAPES[InputKind.IMAGES], InputKind.IMAGES
    autoencoder = build_model(
        ModelName.AUTOENCODER,
        input_shape=shape,
        input_kind=kind,
        task=Task(TaskKind.RECONSTRUCTION),
        seed=1,
    )
    path = tmp_path / "autoencoder.safetensors"
    save_safetensors(path, ModelLayout.of(autoencoder).named(get_weights(autoencoder)), {})
    classifier = build_model(
        ModelName.CNN, input_shape=shape, input_kind=kind, task=Task(TaskKind.BINARY), seed=2
    )
    head_before = classifier.state_dict()["head.2.weight"].clone()
    loaded = load_matching_weights(classifier, path)
    assert loaded and all(name.startswith("encoder.") for name in loaded)
    for name in loaded:
        assert torch.equal(classifier.state_dict()[name], autoencoder.state_dict()[name])
    assert torch.equal(classifier.state_dict()["head.2.weight"], head_before)


def test_an_unrelated_checkpoint_initialises_nothing(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_safetensors(path, {"unrelated": np.zeros(3, dtype=np.float32)}, {})
    with pytest.raises(InvalidUpdateError, match="no tensor matches"):
        load_matching_weights(_build(ModelName.CNN, seed=0), path)
