"""``fedcare contract draft``: a starting contract from one hospital's file, of each format.

Every draft parses, accepts the file it was drafted from, and says that its
ranges describe that hospital's data only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.client.contract_draft import round_out
from fedcare.client.readers import read_site_data
from fedcare.shared.contract import DataContract, FillStatistic, MissingPolicy
from fedcare.shared.data import InputKind
from tests.own_files import cancer_table, vitals, write_image_folder, write_image_npz

runner = CliRunner()


def _draft(tmp_path: Path, *arguments: str) -> DataContract:
    out = tmp_path / "drafted.toml"
    result = runner.invoke(app, ["contract", "draft", *arguments, "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "describe this hospital's data only" in said and f"drafted {out}" in said
    assert "THIS hospital's data only" in out.read_text()
    return DataContract.load(out)


def test_a_table_draft_infers_types_ranges_categories_and_gaps(tmp_path: Path) -> None:
    frame = cancer_table().head(200)
    frame["sex"] = np.where(np.arange(len(frame)) % 2, "F", "M")
    frame["stage"] = (np.arange(len(frame)) % 4) + 1
    path = tmp_path / "hospital.csv"
    frame.to_csv(path, index=False)
    contract = _draft(tmp_path, str(path), "--label", "diagnosis", "--id-column", "patient_id")
    features = {feature.name: feature for feature in contract.features}
    assert contract.task_kind.value == "binary" and contract.classes == ("benign", "malignant")
    assert contract.id_columns == ("patient_id",)
    radius = features["radius"]
    assert (
        radius.type.value == "float" and radius.minimum is not None and radius.maximum is not None
    )
    assert radius.minimum <= frame["radius"].min() and radius.maximum >= frame["radius"].max()
    assert features["stage"].type.value == "int" and features["sex"].categories == ("F", "M")
    concave = features["concave"]  # a third of its cells are empty
    assert concave.missing is MissingPolicy.IMPUTE and concave.fill is FillStatistic.DP_MEAN
    assert concave.indicator and features["radius"].missing is MissingPolicy.REJECT
    assert len(read_site_data(path, contract)) == 200


def test_a_sequence_draft_infers_its_settings_and_forward_fill(tmp_path: Path) -> None:
    path = tmp_path / "stays.parquet"
    vitals(40, seed=3).to_parquet(path, index=False)
    contract = _draft(
        tmp_path,
        str(path),
        "--label",
        "deterioration",
        "--id-column",
        "stay_id",
        "--time-column",
        "hour",
    )
    assert contract.format is InputKind.SEQUENCES and contract.missing is MissingPolicy.FORWARD_FILL
    assert contract.sequences is not None
    assert (contract.sequences.max_length, contract.sequences.min_length) == (12, 6)
    assert [f.name for f in contract.features] == ["heart_rate", "resp_rate", "lactate"]
    assert all(f.fill is FillStatistic.DP_MEAN for f in contract.features)
    assert len(read_site_data(path, contract)) == 40


@pytest.mark.parametrize("layout", ["npz", "folder"])
def test_an_image_draft_infers_size_channels_and_classes(layout: str, tmp_path: Path) -> None:
    if layout == "npz":
        path = write_image_npz(tmp_path / "films.npz", 60, seed=1)
        classes: tuple[str, ...] = ("0", "1", "2")
    else:
        path = write_image_folder(tmp_path / "films", 60, seed=1)
        classes = ("nodule", "normal", "opacity")
    contract = _draft(tmp_path, str(path))
    assert contract.format is InputKind.IMAGES and contract.classes == classes
    assert contract.images is not None
    assert (contract.images.channels, contract.images.height, contract.images.width) == (1, 16, 16)
    assert len(read_site_data(path, contract)) == 60


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["{table}"], "needs the label column: give --label"),
        (["{table}", "--label", "nope"], "has no column 'nope'"),
        (["{table}", "--label", "diagnosis", "--format", "video"], "must be one of table"),
        (["{single}", "--label", "diagnosis"], "holds 1 class(es) here"),
        (["{table}", "--label", "diagnosis", "--time-column", "t"], "give --id-column and"),
    ],
    ids=["no-label", "unknown-label", "unknown-format", "single-class", "sequence-without-id"],
)
def test_a_draft_that_cannot_be_made_says_why(
    arguments: list[str], expected: str, tmp_path: Path
) -> None:
    frame = cancer_table().head(50)
    frame.to_csv(tmp_path / "table.csv", index=False)
    frame[frame["diagnosis"] == "benign"].to_csv(tmp_path / "single.csv", index=False)
    paths = {"table": tmp_path / "table.csv", "single": tmp_path / "single.csv"}
    out = tmp_path / "drafted.toml"
    given = [argument.format(**paths) for argument in arguments]
    result = runner.invoke(app, ["contract", "draft", *given, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()) and not out.exists()


def test_a_draft_never_overwrites_a_file(tmp_path: Path) -> None:
    cancer_table().head(50).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "contract.toml").write_text("keep me")
    result = runner.invoke(
        app,
        [
            "contract",
            "draft",
            str(tmp_path / "t.csv"),
            "--label",
            "diagnosis",
            "--out",
            str(tmp_path / "contract.toml"),
        ],
    )
    assert result.exit_code == 2 and (tmp_path / "contract.toml").read_text() == "keep me"


def test_ranges_round_outward() -> None:
    assert round_out(13.7, up=True) == 14.0 and round_out(13.7, up=False) == 13.0
    assert round_out(-13.7, up=False) == -14.0 and round_out(0.0345, up=True) == 0.035
    assert round_out(7042.0, up=True) == 7100.0 and round_out(0.0, up=True) == 0.0
