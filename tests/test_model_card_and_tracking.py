"""The model card in every run folder, experiment tracking, and the README's "Using the model".

One real simulation (``fedcare simulate --rounds 1``, DP-SGD and SecAgg+) makes
the run folder; the rest follows the README as a new user would.
"""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.server.model_card import TRIPOD_AI_ITEMS, build_model_card, model_card_markdown
from fedcare.server.reference import contract_reference
from fedcare.server.run_record import HospitalRound, RoundRecord, RunRecord
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName, TrainingSettings
from tests.model_runs import IMAGE_CONTRACT

runner = CliRunner()


def _summary(config: RunConfig) -> dict:
    return {
        "status": "completed",
        "final": {"federated": {"auroc": 0.9, "accuracy": 0.8, "f1": 0.7}},
        "final_source": "federated",
        "rounds": {"planned": 2, "aggregated": [1, 2]},
        "privacy": {
            "per_hospital": {"hospital-1": 1.2, "hospital-2": 1.4},
            "delta": 1e-5,
            "accountant": "rdp",
            "guarantee": "sample-level DP",
        },
        "secure_aggregation": {"protocol": "SecAgg+ (Flower)", "guarantee": "sums only"},
        "warnings": [],
    }


def test_a_deployed_runs_card_names_hospitals_contract_privacy_and_where_intervals_come_from() -> (
    None
):
    config = RunConfig.from_flat({"contract": IMAGE_CONTRACT, "model": "cnn"})
    record = RunRecord(
        rounds=[
            RoundRecord(
                round=1,
                hospitals={
                    "hospital-1": HospitalRound(num_train_examples=80, num_eval_examples=20),
                    "hospital-2": HospitalRound(num_train_examples=120, num_eval_examples=30),
                },
            )
        ]
    )
    card = build_model_card(
        config=config,
        record=record,
        reference=contract_reference(IMAGE_CONTRACT, TrainingSettings(model=ModelName.CNN)),
        summary=_summary(config),
    )
    assert set(card["tripod_ai"]) == set(TRIPOD_AI_ITEMS)
    assert card["data"]["hospitals"]["hospital-2"] == {"training_rows": 120, "evaluation_rows": 30}
    assert card["data"]["contract"]["classes"] == ["normal", "nodule", "opacity"]
    assert "fedcare evaluate" in card["performance"]["intervals_95"]
    text = model_card_markdown(card)
    for heading in (
        "## Intended use",
        "## Data",
        "## Privacy",
        "## Performance",
        "## Known limits",
    ):
        assert heading in text
    assert "| hospital-1 | 80 | 20 |" in text
    assert "Epsilon spent in this run, hospital-2: 1.400" in text


def _rows(train: int, evaluation: int) -> HospitalRound:
    return HospitalRound(num_train_examples=train, num_eval_examples=evaluation)


def test_a_hospitals_words_reach_the_card_as_text_never_as_markup() -> None:
    config = RunConfig.from_flat({"contract": IMAGE_CONTRACT, "model": "cnn"})
    hostile = "x|<img src=https://tracker.example/p.png>"
    record = RunRecord(rounds=[RoundRecord(round=1, hospitals={hostile: _rows(80, 20)})])
    summary = _summary(config)
    summary["warnings"] = [
        "round 1: train: hospital-2: refuses\n## Approved\n[approve here](https://evil.example) `x`"
    ]
    card = build_model_card(
        config=config,
        record=record,
        reference=contract_reference(IMAGE_CONTRACT, TrainingSettings(model=ModelName.CNN)),
        summary=summary,
    )
    assert card["warnings"] == summary["warnings"]  # the JSON keeps the words as they came
    text = model_card_markdown(card)
    assert not re.search(r"(?<!\\)[<\[`]", text.split("Warning from the run:")[1])
    assert "](" not in text and "\n## Approved" not in text
    assert r"\[approve here\]\(https://evil.example\) \`x\`" in text
    assert r"| x\|\<img src=https://tracker.example/p.png\> | 80 | 20 |" in text


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("simulated")
    run = folder / "run"
    result = runner.invoke(
        app,
        ["simulate", "--rounds", "1", "--out", str(run), "--track", "tensorboard"],
    )
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.integration
def test_a_simulated_run_has_a_model_card_with_test_set_intervals(simulated: Path) -> None:
    card = json.loads((simulated / "model_card.json").read_text())
    intervals = card["performance"]["intervals_95"]
    auroc = intervals["metrics"]["auroc"]
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert 0.0 <= card["calibration"]["ece"] <= 1.0
    assert set(card["data"]["hospitals"]) == {"hospital-1", "hospital-2", "hospital-3"}
    assert card["privacy"]["differential_privacy"]["delta"] == 1e-5
    assert "Model card:" in (simulated / "model_card.md").read_text()


@pytest.mark.integration
def test_the_readme_flow_evaluates_and_predicts_with_a_simulated_run(
    simulated: Path, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    assert runner.invoke(app, ["demo-data", "--out", str(demo)]).exit_code == 0
    contract = str(demo / "contract.toml")
    data = str(demo / "hospital-2.csv")
    evaluation = tmp_path / "evaluation"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(simulated),
            "--data",
            data,
            "--contract",
            contract,
            "--out",
            str(evaluation),
            "--bootstrap",
            "200",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((evaluation / "evaluation.json").read_text())
    assert report["metrics"]["auroc"]["value"] > 0.8
    predictions = tmp_path / "predictions.csv"
    result = runner.invoke(
        app,
        [
            "predict",
            str(simulated),
            "--data",
            data,
            "--contract",
            contract,
            "--out",
            str(predictions),
        ],
    )
    assert result.exit_code == 0, result.output
    assert predictions.read_text().splitlines()[0].startswith("patient_id,status,predicted")


@pytest.mark.integration
def test_a_run_is_tracked_in_tensorboard_and_mlflow(simulated: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(simulated / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "test/auroc" in scalars and "hospital-1/epsilon" in scalars
    assert [event.step for event in events.Scalars("test/auroc")] == [0, 1]
    uri = (tmp_path / "mlruns").as_uri()
    result = runner.invoke(app, ["track", str(simulated), "--to", "mlflow", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fedcare")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["num-server-rounds"] == "1"
    history = client.get_metric_history(run.info.run_id, "hospital-2/epsilon")
    assert [point.step for point in history] == [1]
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "model_card.md", "summary.json"} <= artifacts


def test_an_unknown_tracker_stops_before_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", "--out", str(out), "--track", "wandb"])
    assert result.exit_code == 2
    assert "not a tracker" in result.output
    assert not out.exists()
