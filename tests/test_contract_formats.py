"""Data contracts for images and sequences: parsing, fingerprints, refusals, and real loading."""

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
from fedcare.shared.config import DeviceName, ModelName, RunConfig
from fedcare.shared.contract import ContractError, DataContract
from fedcare.shared.data import InputKind
from fedcare.shared.errors import DataError
from fedcare.shared.models import build_model
from fedcare.shared.tasks import TaskKind
from fedcare.simulations.synthetic import make_images, make_vitals

IMAGE_CONTRACT = """
name = "chest-films"
format = "images"
task = "multiclass"
classes = ["normal", "nodule", "opacity"]
min_rows = 30
min_rows_per_class = 5

[images]
channels = 1
height = 28
width = 28
"""

VITALS = ("heart_rate", "systolic_bp", "resp_rate", "spo2", "temperature", "lactate")

SEQUENCE_CONTRACT = """
name = "icu-deterioration"
format = "sequences"
task = "binary"
label = "deterioration"
classes = ["0", "1"]
positive_class = "1"
min_rows = 30
min_rows_per_class = 5

[sequences]
id_column = "patient_id"
time_column = "hour"
max_length = 12
min_length = 4

[features.heart_rate]
type = "float"
min = 0.0
max = 300.0

[features.systolic_bp]
type = "float"

[features.resp_rate]
type = "float"

[features.spo2]
type = "float"

[features.temperature]
type = "float"

[features.lactate]
type = "float"
min = 0.0
"""

TABLE_CONTRACT = """
name = "test-diagnosis"
task = "binary"
label = "diagnosis"
classes = ["benign", "malignant"]
positive_class = "malignant"
id_columns = ["patient_id"]
missing = "reject"
min_rows = 6
min_rows_per_class = 2

[features.age]
type = "int"
min = 0
max = 120

[features.radius]
type = "float"
min = 0.0
max = 50.0

[features.sex]
type = "category"
categories = ["F", "M"]
"""

TABLE_FINGERPRINT = "15f3156a4921b49791f428c15b9a06716a692af1aba167457ab9da6e59c07ca7"
"""The table contract's fingerprint before contracts had formats: it must never change."""


def _parse(text: str) -> DataContract:
    return DataContract.parse(text, source="contract.toml")


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


# --- parsing valid contracts


def test_image_contract_parses_into_shape_kind_and_spec() -> None:
    contract = _parse(IMAGE_CONTRACT)
    assert contract.input_kind() is InputKind.IMAGES
    assert contract.input_shape() == (1, 28, 28)
    assert contract.feature_names() == ("gray",)
    assert contract.task().kind is TaskKind.MULTICLASS and contract.task().num_classes == 3
    spec = contract.image_spec()
    assert (spec.channels, spec.height, spec.width) == (1, 28, 28)
    assert spec.classes == ("normal", "nodule", "opacity")
    assert (spec.min_images, spec.min_images_per_class) == (30, 5)


def test_rgb_image_contract_names_three_channels() -> None:
    contract = _parse(_edit(IMAGE_CONTRACT, "channels = 1", "channels = 3"))
    assert contract.input_shape() == (3, 28, 28)
    assert contract.feature_names() == ("red", "green", "blue")


def test_sequence_contract_parses_into_shape_kind_and_spec() -> None:
    contract = _parse(SEQUENCE_CONTRACT)
    assert contract.input_kind() is InputKind.SEQUENCES
    assert contract.input_shape() == (12, len(VITALS) + 1)
    assert contract.feature_names() == (*VITALS, "observed")
    assert contract.task().kind is TaskKind.BINARY and contract.task().positive_label == "1"
    spec = contract.sequence_spec()
    assert (spec.id_column, spec.time_column, spec.label) == ("patient_id", "hour", "deterioration")
    assert spec.features == VITALS
    assert (spec.max_length, spec.min_length) == (12, 4)
    assert (spec.min_patients, spec.min_patients_per_class) == (30, 5)


def test_table_contract_is_unchanged_by_formats() -> None:
    contract = _parse(TABLE_CONTRACT)
    assert contract.input_kind() is InputKind.TABLE
    assert contract.input_shape() == (4,)
    assert contract.fingerprint() == TABLE_FINGERPRINT
    explicit = _parse('format = "table"\n' + TABLE_CONTRACT)
    assert explicit.fingerprint() == TABLE_FINGERPRINT


def test_spec_of_another_format_is_refused() -> None:
    with pytest.raises(ContractError, match="contract.toml describes images data, not sequences"):
        _parse(IMAGE_CONTRACT).sequence_spec()
    with pytest.raises(ContractError, match="describes sequences data, not images"):
        _parse(SEQUENCE_CONTRACT).image_spec()
    with pytest.raises(ContractError, match="describes table data, not images"):
        _parse(TABLE_CONTRACT).image_spec()


def test_fingerprints_differ_by_format_and_size() -> None:
    prints = {
        _parse(TABLE_CONTRACT).fingerprint(),
        _parse(IMAGE_CONTRACT).fingerprint(),
        _parse(_edit(IMAGE_CONTRACT, "height = 28", "height = 32")).fingerprint(),
        _parse(_edit(IMAGE_CONTRACT, "channels = 1", "channels = 3")).fingerprint(),
        _parse(SEQUENCE_CONTRACT).fingerprint(),
        _parse(_edit(SEQUENCE_CONTRACT, "max_length = 12", "max_length = 24")).fingerprint(),
        _parse(_edit(SEQUENCE_CONTRACT, "min_length = 4", "min_length = 5")).fingerprint(),
        _parse(_edit(SEQUENCE_CONTRACT, '"patient_id"', '"stay_id"')).fingerprint(),
    }
    assert len(prints) == 8
    reformatted = "# comment\n" + IMAGE_CONTRACT.replace(" = ", "=")
    assert _parse(reformatted).fingerprint() == _parse(IMAGE_CONTRACT).fingerprint()


def test_binary_labels_follow_the_positive_class_not_its_position() -> None:
    contract = _parse(
        _edit(
            IMAGE_CONTRACT,
            'task = "multiclass"\nclasses = ["normal", "nodule", "opacity"]',
            'task = "binary"\nclasses = ["abnormal", "normal"]\npositive_class = "abnormal"',
        )
    )
    labels = contract.labels_from_indices(np.array([0, 1, 1, 0]))
    assert labels.dtype == np.float32 and labels.tolist() == [1.0, 0.0, 0.0, 1.0]
    multiclass = _parse(IMAGE_CONTRACT).labels_from_indices(np.array([2, 0, 1], dtype=np.int32))
    assert multiclass.dtype == np.int64 and multiclass.tolist() == [2, 0, 1]


# --- malformed contracts

MALFORMED = [
    ("unknown-format", _edit(IMAGE_CONTRACT, '"images"\n', '"video"\n'), "format"),
    ("images-without-table", IMAGE_CONTRACT.split("[images]")[0], "images"),
    ("channels-two", _edit(IMAGE_CONTRACT, "channels = 1", "channels = 2"), "images.channels"),
    ("channels-text", _edit(IMAGE_CONTRACT, "channels = 1", 'channels = "1"'), "images.channels"),
    ("height-too-small", _edit(IMAGE_CONTRACT, "height = 28", "height = 4"), "images.height"),
    ("width-too-large", _edit(IMAGE_CONTRACT, "width = 28", "width = 4096"), "images.width"),
    ("no-width", _edit(IMAGE_CONTRACT, "width = 28\n", ""), "images.width"),
    ("unknown-image-key", IMAGE_CONTRACT + 'mode = "L"\n', "images.mode"),
    (
        "image-regression",
        _edit(
            IMAGE_CONTRACT,
            'task = "multiclass"\nclasses = ["normal", "nodule", "opacity"]\n',
            'task = "regression"\n',
        ),
        "task",
    ),  # fmt: skip
    (
        "image-class-not-a-folder-name",
        _edit(IMAGE_CONTRACT, '"nodule"', '"nodule/left"'),
        "classes",
    ),
    ("image-with-label", 'label = "diagnosis"\n' + IMAGE_CONTRACT, "label"),
    ("image-with-features", IMAGE_CONTRACT + '[features.x]\ntype = "float"\n', "features"),
    (
        "table-with-images-table",
        TABLE_CONTRACT + "[images]\nchannels = 1\nheight = 28\nwidth = 28\n",
        "images",
    ),
    ("sequences-without-table", SEQUENCE_CONTRACT.split("[sequences]")[0], "sequences"),
    (
        "no-max-length",
        _edit(SEQUENCE_CONTRACT, "max_length = 12\n", ""),
        "sequences.max_length",
    ),
    (
        "max-length-zero",
        _edit(SEQUENCE_CONTRACT, "max_length = 12", "max_length = 0"),
        "sequences.max_length",
    ),
    (
        "min-length-text",
        _edit(SEQUENCE_CONTRACT, "min_length = 4", 'min_length = "4"'),
        "sequences.min_length",
    ),
    (
        "blank-id-column",
        _edit(SEQUENCE_CONTRACT, '"patient_id"', '" "'),
        "sequences.id_column",
    ),
    (
        "time-is-id",
        _edit(SEQUENCE_CONTRACT, '"hour"', '"patient_id"'),
        "sequences.time_column",
    ),
    (
        "unknown-sequence-key",
        _edit(SEQUENCE_CONTRACT, "min_length = 4", "stride = 2"),
        "sequences.stride",
    ),  # fmt: skip
    ("no-label", _edit(SEQUENCE_CONTRACT, 'label = "deterioration"\n', ""), "label"),
    (
        "label-is-time",
        _edit(SEQUENCE_CONTRACT, 'label = "deterioration"', 'label = "hour"'),
        "label",
    ),  # fmt: skip
    (
        "category-feature",
        SEQUENCE_CONTRACT + '\n[features.sex]\ntype = "category"\ncategories = ["F", "M"]\n',
        "features.sex.type",
    ),
    ("time-is-feature", SEQUENCE_CONTRACT + '\n[features.hour]\ntype = "int"\n', "features.hour"),
    (
        "mask-name-is-feature",
        SEQUENCE_CONTRACT + '\n[features.observed]\ntype = "float"\n',
        "features.observed",
    ),
    ("sequence-no-features", SEQUENCE_CONTRACT.split("[features.heart_rate]")[0], "features"),
    ("sequence-drop-rows", 'missing = "drop-rows"\n' + SEQUENCE_CONTRACT, "missing"),
    ("sequence-id-columns", 'id_columns = ["site"]\n' + SEQUENCE_CONTRACT, "id_columns"),
    (
        "sequence-min-above-max",
        _edit(SEQUENCE_CONTRACT, "max = 300.0", "max = -1.0"),
        "features.heart_rate",
    ),
    ("table-survival", _edit(TABLE_CONTRACT, 'task = "binary"', 'task = "survival"'), "task"),
]


@pytest.mark.parametrize(
    ("text", "field"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_contract_is_refused_by_field(text: str, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        _parse(text)
    message = str(caught.value)
    assert "contract.toml" in message and f"field '{field}'" in message
    # Every refusal says what to do, not only what is wrong.
    assert len(message.split(f"field '{field}': ", 1)[1]) > 10


def test_refusals_name_the_fix() -> None:
    cases = {
        _edit(IMAGE_CONTRACT, "channels = 1", "channels = 2"): "1 (grayscale) or 3 (RGB)",
        SEQUENCE_CONTRACT + '\n[features.sex]\ntype = "category"\n': "use float or int",
        TABLE_CONTRACT + "[images]\nchannels = 1\n": 'set format = "images"',
        'label = "x"\n' + IMAGE_CONTRACT: "remove label",
        _edit(IMAGE_CONTRACT, 'task = "multiclass"', 'task = "regression"'): "binary, multiclass",
    }
    for text, fix in cases.items():
        with pytest.raises(ContractError, match=fix.replace("(", r"\(").replace(")", r"\)")):
            _parse(text)


# --- the aggregator's side


@pytest.mark.parametrize(
    ("text", "model", "shape", "kind"),
    [
        (IMAGE_CONTRACT, ModelName.CNN, (1, 28, 28), InputKind.IMAGES),
        (SEQUENCE_CONTRACT, ModelName.GRU, (12, 7), InputKind.SEQUENCES),
        (TABLE_CONTRACT, ModelName.MLP, (4,), InputKind.TABLE),
    ],
)
def test_contract_reference_carries_shape_and_kind(
    text: str, model: ModelName, shape: tuple[int, ...], kind: InputKind
) -> None:
    reference = contract_reference(text, model)
    assert reference.input_shape == shape and reference.input_kind is kind
    assert reference.feature_names == _parse(text).feature_names()
    built = build_model(
        model, input_shape=shape, input_kind=kind, task=reference.task, seed=0
    )  # the aggregator builds the model from the contract alone
    assert built is not None


# --- real hospitals loading by format


def _node(tmp_path: Path, data: Path, contract_text: str) -> dict[str, object]:
    contract = tmp_path / "contract.toml"
    contract.write_text(contract_text, encoding="utf-8")
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
    reference = contract_reference(text, model)
    network = build_model(
        model,
        input_shape=reference.input_shape,
        input_kind=reference.input_kind,
        task=reference.task,
        seed=0,
    )
    with torch.no_grad():
        return network(torch.from_numpy(features[:4]))


def test_image_hospital_loads_its_npz_through_the_contract(tmp_path: Path) -> None:
    site = load_site(
        _node(tmp_path, _image_file(tmp_path), IMAGE_CONTRACT), _run(IMAGE_CONTRACT, ModelName.CNN)
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
        load_site(node, _run(SEQUENCE_CONTRACT, ModelName.GRU))


def test_images_that_break_the_contract_are_refused(tmp_path: Path) -> None:
    wide = _edit(IMAGE_CONTRACT, "width = 28", "width = 32")
    node = _node(tmp_path, _image_file(tmp_path), wide)
    with pytest.raises(DataError, match="wrong-size"):
        load_site(node, _run(wide, ModelName.CNN))


def test_sequence_values_outside_the_contract_are_refused_without_echo(tmp_path: Path) -> None:
    frame = make_vitals(60, max_length=24, seed=0)
    last_hour = frame.groupby("patient_id")["hour"].transform("max") == frame["hour"]
    frame.loc[last_hour & (frame.index % 3 == 0), "heart_rate"] = 987654.0
    path = tmp_path / "vitals.csv"
    frame.to_csv(path, index=False)
    node = _node(tmp_path, path, SEQUENCE_CONTRACT)
    with pytest.raises(DataError) as caught:
        load_site(node, _run(SEQUENCE_CONTRACT, ModelName.GRU))
    message = str(caught.value)
    assert "column 'heart_rate': above-max in" in message and "987654" not in message


def test_integer_sequence_features_must_be_whole() -> None:
    contract = _parse(_edit(SEQUENCE_CONTRACT, 'type = "float"\nmin = 0.0\nmax = 300.0',
                            'type = "int"'))  # fmt: skip
    inputs = np.zeros((2, 12, len(VITALS) + 1), dtype=np.float32)
    inputs[:, -3:, -1] = 1.0
    inputs[:, -3:, 0] = 70.0
    contract.check_sequence_values(inputs, "vitals.csv")  # whole numbers pass
    inputs[0, -1, 0] = 70.5
    inputs[1, 0, 0] = 0.25  # padding is never judged
    with pytest.raises(DataError, match=r"'heart_rate': not-an-integer in 1 time step:"):
        contract.check_sequence_values(inputs, "vitals.csv")


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
