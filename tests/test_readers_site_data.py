"""A hospital's data read by its contract's format (client.readers.read_site_data), end to end.

Real hospitals load through :func:`client.site.load_site` and ``fedcare hospital
check``; both read with the reader the contract's format names.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fedcare.client.preflight import Status, _data
from fedcare.client.site import load_site
from fedcare.client.site_settings import SiteNode, SitePrivacy
from fedcare.server.reference import contract_reference
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import DeviceName, ModelName, TrainingSettings
from fedcare.shared.data import InputKind
from fedcare.shared.errors import DataError
from fedcare.shared.models import build_model
from fedcare.shared.tasks import TaskKind
from fedcare.simulations.synthetic_images import make_images
from fedcare.simulations.synthetic_patients import make_vitals
from tests.contracts import (
    IMAGE_CONTRACT,
    SEQUENCE_CONTRACT,
    VITALS,
    edit,
    write_contract,
)


def _node(tmp_path: Path, data: Path, contract_text: str) -> dict[str, object]:
    contract = write_contract(tmp_path, contract_text)
    node = SiteNode(
        name="st-mary",
        data=data,
        contract=contract,
        device=DeviceName.CPU,
        state=tmp_path / "state",
        privacy=SitePrivacy(),
    )
    return dict(node.to_node_config())


def _run(contract_text: str, model: ModelName) -> RunConfig:
    return RunConfig.from_flat({"contract": contract_text, "model": model.value, "device": "cpu"})


def _image_file(tmp_path: Path, n: int = 60) -> Path:
    images, labels = make_images(n, num_classes=3, channels=1, size=28, seed=0)
    path = tmp_path / "films.npz"
    np.savez(path, train_images=(images[:, 0] * 255).round().astype(np.uint8), train_labels=labels)
    return path


def _vitals_file(tmp_path: Path, n_patients: int = 60) -> Path:
    path = tmp_path / "vitals.csv"
    make_vitals(n_patients, max_length=24, seed=0).to_csv(path, index=False)
    return path


def _forward(model: ModelName, text: str, features: np.ndarray) -> torch.Tensor:
    reference = contract_reference(text, TrainingSettings(model=model))
    network = build_model(
        model,
        input_shape=reference.input_shape,
        input_kind=reference.input_kind,
        task=reference.task,
        seed=0,
    )
    with torch.no_grad():
        outputs: torch.Tensor = network(torch.from_numpy(features[:4]))
    return outputs


def test_image_hospital_loads_its_npz_through_the_contract(tmp_path: Path) -> None:
    site = load_site(
        _node(tmp_path, _image_file(tmp_path), IMAGE_CONTRACT),
        _run(IMAGE_CONTRACT, ModelName.CNN),
        "run-1",
    )
    train, evaluation = site.data.train, site.data.evaluation
    assert train.kind is InputKind.IMAGES and evaluation.kind is InputKind.IMAGES
    assert train.input_shape == (1, 28, 28) and train.features.dtype == np.float32
    assert len(train) + len(evaluation) == 60
    assert train.labels.dtype == np.int64 and set(train.labels.tolist()) == {0, 1, 2}
    assert train.feature_names == ("gray",)
    assert float(train.features.min()) >= 0.0 and float(train.features.max()) <= 1.0
    assert site.task.kind is TaskKind.MULTICLASS
    assert _forward(ModelName.CNN, IMAGE_CONTRACT, train.features).shape == (4, 3)


def test_sequence_hospital_loads_its_long_csv_through_the_contract(tmp_path: Path) -> None:
    site = load_site(
        _node(tmp_path, _vitals_file(tmp_path), SEQUENCE_CONTRACT),
        _run(SEQUENCE_CONTRACT, ModelName.GRU),
        "run-1",
    )
    train, evaluation = site.data.train, site.data.evaluation
    assert train.kind is InputKind.SEQUENCES
    assert train.input_shape == (12, len(VITALS) + 1) and train.features.dtype == np.float32
    assert len(train) + len(evaluation) == 60
    assert train.labels.dtype == np.float32 and set(train.labels.tolist()) == {0.0, 1.0}
    assert train.feature_names == (*VITALS, "observed")
    mask = train.features[..., -1]
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0} and mask[:, -1].all()
    assert site.task.kind is TaskKind.BINARY
    assert _forward(ModelName.GRU, SEQUENCE_CONTRACT, train.features).shape == (4, 1)


def test_hospital_with_another_formats_contract_is_refused(tmp_path: Path) -> None:
    node = _node(tmp_path, _image_file(tmp_path), IMAGE_CONTRACT)
    with pytest.raises(DataError, match="differs from the run's"):
        load_site(node, _run(SEQUENCE_CONTRACT, ModelName.GRU), "run-1")


def test_images_that_break_the_contract_are_refused(tmp_path: Path) -> None:
    wide = edit(IMAGE_CONTRACT, "width = 28", "width = 32")
    node = _node(tmp_path, _image_file(tmp_path), wide)
    with pytest.raises(DataError, match="wrong-size"):
        load_site(node, _run(wide, ModelName.CNN), "run-1")


def test_sequence_values_outside_the_contract_are_refused_without_echo(tmp_path: Path) -> None:
    frame = make_vitals(60, max_length=24, seed=0)
    last_hour = frame.groupby("patient_id")["hour"].transform("max") == frame["hour"]
    frame.loc[last_hour & (frame.index % 3 == 0), "heart_rate"] = 987654.0
    path = tmp_path / "vitals.csv"
    frame.to_csv(path, index=False)
    node = _node(tmp_path, path, SEQUENCE_CONTRACT)
    with pytest.raises(DataError) as caught:
        load_site(node, _run(SEQUENCE_CONTRACT, ModelName.GRU), "run-1")
    message = str(caught.value)
    assert "column 'heart_rate': above-max in" in message and "987654" not in message


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    [
        (IMAGE_CONTRACT, _image_file, "60 images, 1x28x28 pixels"),
        (SEQUENCE_CONTRACT, _vitals_file, "60 patients, up to 12 steps of 6 features; per class"),
    ],
)
def test_preflight_counts_images_and_patients(
    tmp_path: Path, text: str, data: object, expected: str
) -> None:
    files = data(tmp_path)  # type: ignore[operator]
    node = SiteNode.from_node_config(_node(tmp_path, files, text))
    check = _data(SimpleNamespace(node=node))  # type: ignore[arg-type]
    assert check.status is Status.OK and expected in check.detail
    if text is IMAGE_CONTRACT:
        assert "per class: normal 20, nodule 20, opacity 20" in check.detail
