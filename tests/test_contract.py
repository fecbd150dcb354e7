"""The data contract (shared.contract): parsing, fingerprints, refusals, the aggregator's view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcare.server.reference import contract_reference
from fedcare.shared.config.training import ModelName, TrainingSettings
from fedcare.shared.contract import ContractError, DataContract
from fedcare.shared.data import InputKind
from fedcare.shared.models import build_model
from fedcare.shared.tasks import Task, TaskKind
from tests.contracts import (
    IMAGE_CONTRACT,
    SEQUENCE_CONTRACT,
    TABLE_CONTRACT,
    assert_refused_by_field,
    edit,
    parse_contract,
    write_contract,
)

TABLE_FINGERPRINT = "15f3156a4921b49791f428c15b9a06716a692af1aba167457ab9da6e59c07ca7"
"""The table contract's fingerprint before contracts had formats: it must never change."""


def test_task_of_binary_contract() -> None:
    assert parse_contract().task() == Task(TaskKind.BINARY, positive_label="malignant")


def test_fingerprint_ignores_formatting_and_tracks_meaning() -> None:
    reformatted = "# the federation's contract\n" + TABLE_CONTRACT.replace(
        "min = 0\n", "min = 0.0   # years\n"
    )
    assert parse_contract(reformatted).fingerprint() == parse_contract().fingerprint()
    assert len(parse_contract().fingerprint()) == 64
    assert (
        parse_contract(TABLE_CONTRACT.replace("max = 50.0", "max = 60.0")).fingerprint()
        != parse_contract().fingerprint()
    )
    reordered = TABLE_CONTRACT.replace('["F", "M"]', '["M", "F"]')
    assert parse_contract(reordered).fingerprint() != parse_contract().fingerprint()


def test_table_contract_is_unchanged_by_formats() -> None:
    contract = parse_contract(TABLE_CONTRACT)
    assert contract.input_kind() is InputKind.TABLE
    assert contract.input_shape() == (4,)
    assert contract.fingerprint() == TABLE_FINGERPRINT
    explicit = parse_contract('format = "table"\n' + TABLE_CONTRACT)
    assert explicit.fingerprint() == TABLE_FINGERPRINT


def test_spec_of_another_format_is_refused() -> None:
    with pytest.raises(ContractError, match="contract.toml describes images data, not sequences"):
        parse_contract(IMAGE_CONTRACT).sequence_spec()
    with pytest.raises(ContractError, match="describes sequences data, not images"):
        parse_contract(SEQUENCE_CONTRACT).image_spec()
    with pytest.raises(ContractError, match="describes table data, not images"):
        parse_contract(TABLE_CONTRACT).image_spec()


def test_fingerprints_differ_by_format_and_size() -> None:
    prints = {
        parse_contract(TABLE_CONTRACT).fingerprint(),
        parse_contract(IMAGE_CONTRACT).fingerprint(),
        parse_contract(edit(IMAGE_CONTRACT, "height = 28", "height = 32")).fingerprint(),
        parse_contract(edit(IMAGE_CONTRACT, "channels = 1", "channels = 3")).fingerprint(),
        parse_contract(SEQUENCE_CONTRACT).fingerprint(),
        parse_contract(edit(SEQUENCE_CONTRACT, "max_length = 12", "max_length = 24")).fingerprint(),
        parse_contract(edit(SEQUENCE_CONTRACT, "min_length = 4", "min_length = 5")).fingerprint(),
        parse_contract(edit(SEQUENCE_CONTRACT, '"patient_id"', '"stay_id"')).fingerprint(),
    }
    assert len(prints) == 8
    reformatted = "# comment\n" + IMAGE_CONTRACT.replace(" = ", "=")
    assert parse_contract(reformatted).fingerprint() == parse_contract(IMAGE_CONTRACT).fingerprint()


def test_binary_labels_follow_the_positive_class_not_its_position() -> None:
    contract = parse_contract(
        edit(
            IMAGE_CONTRACT,
            'task = "multiclass"\nclasses = ["normal", "nodule", "opacity"]',
            'task = "binary"\nclasses = ["abnormal", "normal"]\npositive_class = "abnormal"',
        )
    )
    labels = contract.labels_from_indices(np.array([0, 1, 1, 0]))
    assert labels.dtype == np.float32 and labels.tolist() == [1.0, 0.0, 0.0, 1.0]
    multiclass = parse_contract(IMAGE_CONTRACT).labels_from_indices(
        np.array([2, 0, 1], dtype=np.int32)
    )
    assert multiclass.dtype == np.int64 and multiclass.tolist() == [2, 0, 1]


# --- malformed contracts


def _edit(old: str, new: str) -> str:
    return edit(TABLE_CONTRACT, old, new)


CONTRACT_CASES = [
    ("unknown-task", _edit('task = "binary"', 'task = "ranking"'), "task"),
    ("no-label", _edit('label = "diagnosis"\n', ""), "label"),
    ("no-classes", _edit('classes = ["benign", "malignant"]\n', ""), "classes"),
    ("one-class", _edit('["benign", "malignant"]', '["benign"]'), "classes"),
    ("numeric-classes", _edit('["benign", "malignant"]', "[0, 1]"), "classes"),
    (
        "positive-not-a-class",
        _edit('positive_class = "malignant"', 'positive_class = "sick"'),
        "positive_class",
    ),
    ("no-positive-class", _edit('positive_class = "malignant"\n', ""), "positive_class"),
    ("feature-without-type", _edit('type = "float"\n', ""), "features.radius.type"),
    ("unknown-type", _edit('type = "float"', 'type = "decimal"'), "features.radius.type"),
    ("min-above-max", _edit("max = 50.0", "max = -1.0"), "features.radius"),
    ("infinite-bound", _edit("max = 50.0", "max = inf"), "features.radius.max"),
    ("empty-categories", _edit('["F", "M"]', "[]"), "features.sex.categories"),
    ("duplicate-categories", _edit('["F", "M"]', '["F", "M", "F"]'), "features.sex.categories"),
    (
        "label-is-feature",
        TABLE_CONTRACT + '\n[features.diagnosis]\ntype = "float"\n',
        "features.diagnosis",
    ),
    (
        "id-is-feature",
        TABLE_CONTRACT + '\n[features.patient_id]\ntype = "int"\n',
        "features.patient_id",
    ),
    ("unknown-top-level-key", "version = 2\n" + TABLE_CONTRACT, "version"),
    ("unknown-feature-key", _edit("max = 120", 'max = 120\nunit = "years"'), "features.age.unit"),
    ("min-rows-zero", _edit("min_rows = 6", "min_rows = 0"), "min_rows"),
    ("min-rows-not-integer", _edit("min_rows = 6", 'min_rows = "6"'), "min_rows"),
    ("no-features", TABLE_CONTRACT.split("[features.age]")[0], "features"),
]


@pytest.mark.parametrize(
    ("text", "field"),
    [case[1:] for case in CONTRACT_CASES],
    ids=[case[0] for case in CONTRACT_CASES],
)
def test_malformed_contract_is_refused_by_field(text: str, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_contract(text)
    assert "contract.toml" in str(caught.value) and f"'{field}'" in str(caught.value)


def test_contract_that_is_not_toml() -> None:
    with pytest.raises(ContractError, match="contract.toml.*TOML"):
        parse_contract("task = binary")


def test_contract_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="contract.toml"):
        DataContract.load(tmp_path / "contract.toml")


def test_contract_loads_from_file(tmp_path: Path) -> None:
    path = write_contract(tmp_path)
    assert DataContract.load(path).fingerprint() == parse_contract().fingerprint()


def test_a_table_contract_cannot_ask_for_survival() -> None:
    assert_refused_by_field(edit(TABLE_CONTRACT, 'task = "binary"', 'task = "survival"'), "task")


def test_refusals_name_the_fix() -> None:
    cases = {
        edit(IMAGE_CONTRACT, "channels = 1", "channels = 2"): "1 (grayscale) or 3 (RGB)",
        SEQUENCE_CONTRACT + '\n[features.sex]\ntype = "category"\n': "use float or int",
        TABLE_CONTRACT + "[images]\nchannels = 1\n": 'set format = "images"',
        'label = "x"\n' + IMAGE_CONTRACT: "remove label",
        edit(IMAGE_CONTRACT, 'task = "multiclass"', 'task = "regression"'): "binary, multiclass",
    }
    for text, fix in cases.items():
        with pytest.raises(ContractError, match=fix.replace("(", r"\(").replace(")", r"\)")):
            parse_contract(text)


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
    reference = contract_reference(text, TrainingSettings(model=model))
    assert reference.input_shape == shape and reference.input_kind is kind
    assert reference.feature_names == parse_contract(text).feature_names()
    built = build_model(
        model, input_shape=shape, input_kind=kind, task=reference.task, seed=0
    )  # the aggregator builds the model from the contract alone
    assert built is not None
