"""Sequences contracts (shared.contract.sequences): the [sequences] table and the file spec."""

from __future__ import annotations

import pytest

from fedcare.shared.contract import SequenceSpecError
from fedcare.shared.data import InputKind
from fedcare.shared.tasks import TaskKind
from tests.contracts import (
    SEQUENCE_CONTRACT,
    VITALS,
    assert_refused_by_field,
    edit,
    parse_contract,
    sequence_spec,
)


def test_sequence_contract_parses_into_shape_kind_and_spec() -> None:
    contract = parse_contract(SEQUENCE_CONTRACT)
    assert contract.input_kind() is InputKind.SEQUENCES
    assert contract.input_shape() == (12, len(VITALS) + 1)
    assert contract.feature_names() == (*VITALS, "observed")
    assert contract.task().kind is TaskKind.BINARY and contract.task().positive_label == "1"
    spec = contract.sequence_spec()
    assert (spec.id_column, spec.time_column, spec.label) == ("patient_id", "hour", "deterioration")
    assert spec.features == VITALS
    assert (spec.max_length, spec.min_length) == (12, 4)
    assert (spec.min_patients, spec.min_patients_per_class) == (30, 5)


# --- malformed contracts and specs

MALFORMED = [
    ("sequences-without-table", SEQUENCE_CONTRACT.split("[sequences]")[0], "sequences"),
    (
        "no-max-length",
        edit(SEQUENCE_CONTRACT, "max_length = 12\n", ""),
        "sequences.max_length",
    ),
    (
        "max-length-zero",
        edit(SEQUENCE_CONTRACT, "max_length = 12", "max_length = 0"),
        "sequences.max_length",
    ),
    (
        "min-length-text",
        edit(SEQUENCE_CONTRACT, "min_length = 4", 'min_length = "4"'),
        "sequences.min_length",
    ),
    (
        "blank-id-column",
        edit(SEQUENCE_CONTRACT, '"patient_id"', '" "'),
        "sequences.id_column",
    ),
    (
        "time-is-id",
        edit(SEQUENCE_CONTRACT, '"hour"', '"patient_id"'),
        "sequences.time_column",
    ),
    (
        "unknown-sequence-key",
        edit(SEQUENCE_CONTRACT, "min_length = 4", "stride = 2"),
        "sequences.stride",
    ),  # fmt: skip
    ("no-label", edit(SEQUENCE_CONTRACT, 'label = "deterioration"\n', ""), "label"),
    (
        "label-is-time",
        edit(SEQUENCE_CONTRACT, 'label = "deterioration"', 'label = "hour"'),
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
        edit(SEQUENCE_CONTRACT, "max = 300.0", "max = -1.0"),
        "features.heart_rate",
    ),
]


@pytest.mark.parametrize(
    ("text", "field"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_contract_is_refused_by_field(text: str, field: str) -> None:
    assert_refused_by_field(text, field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"features": ()}, "features"),
        ({"features": ("hour",)}, "hour"),
        ({"classes": ("alive",)}, "classes"),
        ({"classes": ("alive", "alive")}, "classes"),
        ({"max_length": 0}, "max_length"),
        ({"min_length": 0}, "min_length"),
        ({"min_patients_per_class": -1}, "min_patients_per_class"),
    ],
)
def test_inconsistent_spec(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SequenceSpecError, match=field):
        sequence_spec(**changes)
