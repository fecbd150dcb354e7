"""``fedcare predict``: one row per patient, image or stay; faults reported, never dropped."""

import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from tests.model_runs import (
    Hospital,
    image_hospitals,
    read_csv,
    sequence_hospitals,
    table_hospitals,
    write_images,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return table_hospitals(tmp_path_factory.mktemp("table"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return image_hospitals(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def stays(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return sequence_hospitals(tmp_path_factory.mktemp("stays"))


def _predict(run: Path, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["predict", str(run), "--data", str(data), "--out", str(out), *extra]
    )
    return result.exit_code, " ".join(result.output.split())


def test_every_patient_of_a_table_gets_a_prediction_without_the_label(
    table: Hospital, tmp_path: Path
) -> None:
    unlabelled = tmp_path / "new-patients.csv"
    read_csv(table.external).drop(columns=["diagnosis"]).to_csv(unlabelled, index=False)
    out = tmp_path / "predictions.csv"
    code, output = _predict(table.run, unlabelled, out, "--explain")
    assert code == 0, output
    rows = read_csv(out)
    source = read_csv(table.external)
    assert list(rows["patient_id"]) == list(source["patient_id"])
    assert set(rows["status"]) == {"scored"}
    assert set(rows["predicted"]) <= {"benign", "malignant"}
    probability = rows["probability"].astype(float)
    assert ((probability >= 0) & (probability <= 1)).all()
    # Predictions agree with the true diagnosis for most patients.
    assert (rows["predicted"] == source["diagnosis"]).mean() > 0.85
    assert "attribution:mean_radius" in rows.columns
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_rows_that_break_the_contract_are_reported_and_the_others_scored(
    table: Hospital, tmp_path: Path
) -> None:
    frame = read_csv(table.external)
    frame.loc[3, "mean_radius"] = "-4"
    frame.loc[5, "mean_texture"] = ""
    frame.loc[5, "mean_area"] = "lots"
    data = tmp_path / "mixed.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "predictions.csv"
    code, output = _predict(table.run, data, out)
    assert code == 0, output
    assert "2 not scored" in output
    rows = read_csv(out)
    assert len(rows) == len(frame)
    failed = rows[rows["status"] == "not scored"]
    assert list(failed["patient_id"]) == [frame.loc[3, "patient_id"], frame.loc[5, "patient_id"]]
    assert list(failed["predicted"]) == ["", ""]
    problems = list(failed["problem"])
    assert "mean_radius: Input should be greater than or equal to 6.981" in problems[0]
    assert "mean_texture" in problems[1] and "mean_area" in problems[1]
    assert "lots" not in problems[1]  # never the value
    assert set(rows.drop(index=[3, 5])["status"]) == {"scored"}


def test_wrong_columns_are_refused_and_nothing_is_written(table: Hospital, tmp_path: Path) -> None:
    frame = read_csv(table.external).drop(columns=["mean_radius"]).assign(ward="A")
    data = tmp_path / "bad.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "predictions.csv"
    code, output = _predict(table.run, data, out)
    assert code == 2
    assert "column 'mean_radius': missing-column" in output
    assert "column 'ward': unknown-column" in output
    assert not out.exists()


def test_a_file_where_no_row_meets_the_contract_writes_nothing(
    table: Hospital, tmp_path: Path
) -> None:
    frame = read_csv(table.external).head(3).assign(mean_radius="-1")
    data = tmp_path / "all-bad.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "predictions.csv"
    code, output = _predict(table.run, data, out)
    assert code == 2 and "none of its 3 patients meets the contract" in output
    assert not out.exists()


def test_a_few_patients_are_scored_as_in_training_without_any_reference(
    table: Hospital, tmp_path: Path
) -> None:
    data = tmp_path / "two.csv"
    read_csv(table.external).head(2).to_csv(data, index=False)
    alone, together = tmp_path / "two-predictions.csv", tmp_path / "all-predictions.csv"
    assert _predict(table.run, data, alone)[0] == 0
    assert _predict(table.run, table.external, together)[0] == 0
    # Public scaling: a patient's score never depends on who else is in the file.
    first_two = read_csv(together)["probability"].astype(float).head(2).to_numpy()
    assert np.allclose(read_csv(alone)["probability"].astype(float).to_numpy(), first_two)


def test_predictions_are_never_overwritten(table: Hospital, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("keep me")
    code, output = _predict(table.run, table.external, out)
    assert code == 2 and "already exists" in output
    assert out.read_text() == "keep me"


def test_every_image_gets_a_prediction_and_its_attribution_map(
    images: Hospital, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    code, output = _predict(images.run, images.external, out, "--explain")
    assert code == 0, output
    rows = read_csv(out)
    assert len(rows) == 120 and rows["image"].iloc[0] == "train-0"
    assert set(rows["predicted"]) <= {"normal", "nodule", "opacity"}
    per_class = rows[["probability:normal", "probability:nodule", "probability:opacity"]]
    np.testing.assert_allclose(per_class.astype(float).sum(axis=1), 1.0, atol=1e-5)
    assert (rows["predicted"] == rows["label"]).mean() > 0.6
    with np.load(tmp_path / "predictions.attributions.npz") as maps:
        assert maps["maps"].shape == (120, 28, 28)
        assert list(maps["ids"][:2]) == ["train-0", "train-1"]


def test_images_in_class_folders_are_named_by_their_files(images: Hospital, tmp_path: Path) -> None:
    from PIL import Image

    with np.load(images.external) as archive:
        pixels, labels = archive["train_images"][:30], archive["train_labels"][:30]
    folder = tmp_path / "films"
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        target = folder / ["normal", "nodule", "opacity"][int(label)]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"scan-{index:03d}.png")
    out = tmp_path / "predictions.csv"
    code, output = _predict(images.run, folder, out)
    assert code == 0, output
    rows = read_csv(out)
    assert len(rows) == 30
    folders = [name.split("/")[0] for name in rows["image"]]
    assert folders == list(rows["label"])


def test_images_of_the_wrong_size_are_refused_and_nothing_is_written(
    images: Hospital, tmp_path: Path
) -> None:
    small = write_images(tmp_path / "small.npz", 40, seed=5, size=16)
    out = tmp_path / "predictions.csv"
    code, output = _predict(images.run, small, out)
    assert code == 2 and "wrong-size" in output and "16x16" in output
    assert not out.exists()


def test_every_stay_gets_a_prediction_and_short_stays_are_reported(
    stays: Hospital, tmp_path: Path
) -> None:
    frame = read_csv(stays.external).drop(columns=["deterioration"])
    first = frame["patient_id"].iloc[0]
    # Keep only 2 hours of the first stay: the contract needs at least 4.
    keep = (frame["patient_id"] != first) | (frame["hour"].astype(int) < 2)
    data = tmp_path / "stays.csv"
    frame[keep].to_csv(data, index=False)
    out = tmp_path / "predictions.csv"
    code, output = _predict(stays.run, data, out, "--explain")
    assert code == 0, output
    rows = read_csv(out)
    assert len(rows) == frame["patient_id"].nunique()
    assert rows["patient_id"].iloc[0] == first
    assert rows["status"].iloc[0] == "not scored"
    assert "steps: List should have at least 4 items" in rows["problem"].iloc[0]
    assert set(rows["status"].iloc[1:]) == {"scored"}
    assert "attribution:lactate" in rows.columns and "attribution:observed" not in rows.columns
