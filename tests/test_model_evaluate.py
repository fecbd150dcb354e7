"""``fedcare evaluate``: external validation at a hospital, on every data format."""

import json
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


def _evaluate(hospital: Hospital, out: Path, *extra: str, data: Path | None = None) -> dict:
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(hospital.run),
            "--data",
            str(data or hospital.external),
            "--out",
            str(out),
            "--bootstrap",
            "50",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "evaluation.json").read_text())


def test_a_table_model_is_validated_with_intervals_threshold_calibration_and_curves(
    table: Hospital, tmp_path: Path
) -> None:
    report = _evaluate(
        table, tmp_path / "eval", "--contract", str(table.contract), "--target-sensitivity", "0.9"
    )
    metrics = report["metrics"]
    assert list(metrics)[:2] == ["auroc", "auprc"]
    auroc = metrics["auroc"]
    assert auroc["value"] > 0.9 and auroc["low"] <= auroc["value"] <= auroc["high"]
    point = report["operating_point"]
    assert point["chosen_for"] == "sensitivity" and point["goal"] == 0.9
    assert point["validation_sensitivity"] >= 0.9
    rows = report["rows"]
    assert rows["validation"] > 0 and rows["test"] > rows["validation"]
    assert 0.0 <= report["calibration"]["ece"] <= 1.0
    assert len(report["decision_curve"]["thresholds"]) == 99
    assert len(report["importance"]) == 30
    for name in ("evaluation.json", "evaluation.png"):
        mode = (tmp_path / "eval" / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
    assert (tmp_path / "eval" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"


def test_subgroups_below_the_minimum_count_are_suppressed(table: Hospital, tmp_path: Path) -> None:
    report = _evaluate(
        table,
        tmp_path / "eval",
        "--contract",
        str(table.contract),
        "--subgroup",
        "mean_radius=12,22",
        "--min-count",
        "20",
    )
    groups = report["subgroups"]["mean_radius"]
    assert set(groups) == {"<12", "12 to <22", ">=22"}
    shown = [group for group in groups.values() if "metrics" in group]
    hidden = [group for group in groups.values() if "suppressed" in group]
    assert shown and hidden
    assert all(group["patients"] >= 20 for group in shown)
    assert all(set(group) == {"suppressed"} for group in hidden)


def test_a_fixed_threshold_and_a_specificity_target_are_reported_as_given(
    table: Hospital, tmp_path: Path
) -> None:
    fixed = _evaluate(
        table, tmp_path / "a", "--contract", str(table.contract), "--threshold", "0.3"
    )
    assert fixed["operating_point"]["threshold"] == 0.3 and fixed["rows"]["validation"] == 0
    specific = _evaluate(
        table, tmp_path / "b", "--contract", str(table.contract), "--target-specificity", "0.95"
    )
    assert specific["operating_point"]["validation_specificity"] >= 0.95


def test_an_image_model_is_validated_with_an_importance_map(
    images: Hospital, tmp_path: Path
) -> None:
    report = _evaluate(images, tmp_path / "eval", "--contract", str(images.contract))
    assert report["task"] == "multiclass" and report["operating_point"] is None
    assert report["metrics"]["accuracy"]["value"] > 0.6
    assert report["calibration"]["judged"] == "top class"
    assert "importance" not in report  # the map is in the figure
    assert (tmp_path / "eval" / "evaluation.png").is_file()


def test_a_sequence_model_is_validated_with_subgroups_by_the_last_value(
    stays: Hospital, tmp_path: Path
) -> None:
    report = _evaluate(
        stays,
        tmp_path / "eval",
        "--subgroup",
        "lactate=2",
        "--min-count",
        "5",
    )
    assert report["task"] == "binary"
    assert report["metrics"]["auroc"]["value"] > 0.7
    assert set(report["importance"]) == {
        "heart_rate",
        "systolic_bp",
        "resp_rate",
        "spo2",
        "temperature",
        "lactate",
    }
    assert set(report["subgroups"]["lactate"]) == {"<2", ">=2"}


def test_a_file_with_wrong_columns_is_refused_and_nothing_is_written(
    table: Hospital, tmp_path: Path
) -> None:
    frame = read_csv(table.external).rename(columns={"mean_radius": "radius"})
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(table.run),
            "--data",
            str(bad),
            "--contract",
            str(table.contract),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "column 'mean_radius': missing-column" in message
    assert "column 'radius': unknown-column" in message
    assert not out.exists()


def test_images_of_the_wrong_size_are_refused_and_nothing_is_written(
    images: Hospital, tmp_path: Path
) -> None:
    small = write_images(tmp_path / "small.npz", 60, seed=3, size=16)
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(images.run),
            "--data",
            str(small),
            "--contract",
            str(images.contract),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "wrong-size" in result.output and "16x16" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--subgroup", "height"], "not a feature of the contract"),
        (["--subgroup", "mean_radius"], "needs cut points"),
        (["--threshold", "0.4", "--target-sensitivity", "0.8"], "give one of"),
        (["--target-sensitivity", "1.5"], "must lie in [0, 1]"),
        (["--validation-fraction", "1"], "--validation-fraction must lie in [0, 1)"),
    ],
)
def test_bad_settings_stop_with_one_sentence(
    table: Hospital, tmp_path: Path, arguments: list[str], expected: str
) -> None:
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(table.run),
            "--data",
            str(table.external),
            "--contract",
            str(table.contract),
            "--out",
            str(out),
            *arguments,
        ],
    )
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert not out.exists()


def test_a_simulated_run_needs_a_contract_and_refuses_one_that_does_not_fit(
    table: Hospital, images: Hospital, tmp_path: Path
) -> None:
    # The table run carries its contract; the image contract describes another model.
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(table.run),
            "--data",
            str(table.external),
            "--contract",
            str(images.contract),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 2
    assert "differs from the contract run" in " ".join(result.output.split())
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    result = runner.invoke(app, ["evaluate", str(not_a_run), "--data", str(table.external)])
    assert result.exit_code == 2 and "is not a run folder" in " ".join(result.output.split())


def test_evaluation_scores_match_the_models_own_predictions(table: Hospital) -> None:
    from fedcare.client.model_use.external_validation import ValidationSettings, validate
    from fedcare.client.model_use.trained_model import load_trained_model

    trained = load_trained_model(table.run)
    result = validate(trained, table.external, ValidationSettings(resamples=50, explain=False))
    assert len(result.scores) == result.summary["rows"]["test"]
    assert np.all((result.scores >= 0) & (result.scores <= 1))


def test_by_default_the_evaluation_lands_beside_the_work_not_in_the_run_folder(
    table: Hospital, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(table.run),
            "--data",
            str(table.external),
            "--bootstrap",
            "50",
            "--no-explain",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "evaluations" / "run" / "hospital-2" / "evaluation.json").is_file()
    assert not (table.run / "evaluations").exists()
