"""The round commit: updates in, the next model out, and every file that must follow it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.resume import ProgressWriter, load_resume_point
from fedcare.server.round_commit import Reply, RoundCommit
from fedcare.server.run_directory import RunDirectory
from fedcare.server.run_record import RoundRecord, RunRecord
from fedcare.server.server_optimizer import OptimizerState
from fedcare.shared.audit import AuditEntry, AuditEvent, AuditLog, read_audit_log
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import RunStoppedError
from fedcare.shared.serialization import ModelLayout, load_safetensors

LAYOUT = ModelLayout(names=("weight", "bias"), shapes=((2, 2), (2,)))
PLAINTEXT: dict[str, str | bool] = {
    "secure-aggregation": False,
    "hospital-names": "11=hospital-1,12=hospital-2",
}


class Run:
    """A run folder with a commit over a zero model, as the aggregator builds it."""

    def __init__(self, tmp_path: Path, **settings: str | bool | float | int) -> None:
        self.config = RunConfig.from_flat({**PLAINTEXT, **settings})
        self.dir = RunDirectory(tmp_path / "run")
        self.record = RunRecord()
        self.audit_path = self.dir.path / "audit.jsonl"
        self.commit = RoundCommit(
            config=self.config,
            layout=LAYOUT,
            weights=_model(0.0),
            record=self.record,
            checkpoints=CheckpointWriter(self.dir, LAYOUT, {}),
            progress=ProgressWriter(
                self.dir, self.record, config=self.config, layout=LAYOUT, ledger_run="1"
            ),
            audit=AuditLog(self.audit_path, actor="aggregator"),
            latest_round=0,
            optimizer_state=OptimizerState(),
        )

    def events(self, event: AuditEvent) -> list[AuditEntry]:
        return [e for e in read_audit_log(self.audit_path) if e.event == event.value]


def _model(value: float) -> list[np.ndarray]:
    return [np.full(shape, value, dtype=np.float32) for shape in LAYOUT.shapes]


def _update(name: str, value: float, rows: int) -> Reply:
    return (name, _model(value), rows)


def test_the_row_weighted_mean_becomes_the_model_and_is_checkpointed(tmp_path: Path) -> None:
    run = Run(tmp_path)
    record = run.record.round(1)
    updates = [_update("hospital-1", 0.3, 100), _update("hospital-2", 0.6, 50)]
    updated = run.commit.commit(record, 1, updates, hospitals=2)
    assert updated is not None
    for array in updated:
        np.testing.assert_allclose(array, 0.4, rtol=1e-6)
    assert record.aggregated and record.failures == []
    assert run.commit.latest_round == 1 and run.commit.global_weights is updated
    checkpoint = run.dir.checkpoint_path(1)
    saved = load_safetensors(checkpoint)
    for name, array in zip(LAYOUT.names, updated, strict=True):
        np.testing.assert_array_equal(saved[name], array)
    point = load_resume_point(run.dir, run.config, LAYOUT)
    assert (point.completed_round, point.strategy_state) == (1, {"step": 1})
    (aggregate,) = run.events(AuditEvent.AGGREGATE_COMPUTED)
    assert aggregate.fields == {
        "round": 1,
        "hospitals": 2,
        "checkpoint": checkpoint.name,
        "model_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }


def test_a_plaintext_update_out_of_bounds_is_left_out_and_audited(tmp_path: Path) -> None:
    run = Run(tmp_path, **{"max-update-norm": 1.0})
    record = run.record.round(1)
    updates = [_update("hospital-1", 0.1, 10), _update("hospital-2", 50.0, 10)]
    updated = run.commit.commit(record, 1, updates, hospitals=2)
    assert updated is not None
    np.testing.assert_allclose(updated[0], 0.1, rtol=1e-6)
    (failure,) = record.failures
    assert failure.startswith("train: hospital-2: update rejected (")
    assert failure.endswith("); it was left out of the aggregate")
    (rejected,) = run.events(AuditEvent.UPDATE_REJECTED)
    assert rejected.fields["hospital"] == "hospital-2" and rejected.fields["round"] == 1


def test_a_round_with_no_usable_update_keeps_the_model_and_writes_nothing(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path)
    record = run.record.round(1)
    nan = ("hospital-1", [np.full(s, np.nan, dtype=np.float32) for s in LAYOUT.shapes], 5)
    assert run.commit.commit(record, 1, [nan], hospitals=1) is None
    assert record.failures[-1] == (
        "train: no hospital returned a usable update; the global model is unchanged"
    )
    assert not record.aggregated and run.commit.latest_round == 0
    assert not run.dir.checkpoint_path(1).exists()
    assert run.events(AuditEvent.AGGREGATE_COMPUTED) == []


def test_under_secure_aggregation_only_the_sum_is_checked(tmp_path: Path) -> None:
    run = Run(tmp_path, **{"secure-aggregation": True})
    record = run.record.round(1)
    masked_sum = ("secure aggregate", [*_model(0.5)[:1], np.zeros(3, np.float32)], 20)
    assert run.commit.commit(record, 1, [masked_sum], hospitals=2) is None
    (failure,) = record.failures
    assert failure.startswith("train: aggregate rejected (aggregated update")
    assert failure.endswith("); the global model is unchanged")
    assert run.events(AuditEvent.UPDATE_REJECTED) == []


def test_a_server_optimiser_checkpoints_its_moments_for_a_resume(tmp_path: Path) -> None:
    run = Run(tmp_path, **{"server-optimizer": "fedadam"})
    for server_round in (1, 2):
        run.commit.commit(run.record.round(server_round), server_round, [_update("h", 1, 1)], 1)
    point = load_resume_point(run.dir, run.config, LAYOUT)
    assert point.completed_round == 2
    assert point.strategy_state["step"] == 2
    assert (run.dir.path / str(point.strategy_state["moments"])).is_file()


@pytest.mark.parametrize("masked", [True, False])
def test_every_update_received_is_audited_with_whether_it_was_masked(
    tmp_path: Path, masked: bool
) -> None:
    run = Run(tmp_path, **{"secure-aggregation": masked})
    run.commit.receive(3, "hospital-1", 120)
    (received,) = run.events(AuditEvent.UPDATE_RECEIVED)
    assert received.fields == {"round": 3, "hospital": "hospital-1", "rows": 120, "masked": masked}


def test_finishing_a_round_times_logs_and_saves_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Run(tmp_path, **{"num-server-rounds": 3})
    run.commit.start_round(_model(0.0))
    record = run.record.round(2)
    record.federated_metrics = {"loss": 0.2, "auroc": 0.9, "accuracy": 0.75}
    record.hospital("hospital-1").privacy = {"epsilon": 1.25}
    with caplog.at_level(logging.INFO):
        run.commit.finish_round(record)
    assert record.seconds is not None and record.seconds >= 0
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("fedcare.server.strategy", "round 2/3: auroc 0.900 | epsilon spent: hospital-1 1.25")
    ]
    saved = json.loads((run.dir.path / "metrics.json").read_text())
    assert saved == run.record.to_dict()


def test_a_round_with_nothing_to_show_says_so_in_its_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Run(tmp_path)
    with caplog.at_level(logging.INFO):
        run.commit.finish_round(run.record.round(1))
    assert caplog.records[-1].getMessage() == (
        "round 1/5: no metrics | epsilon spent: none reported"
    )


def test_a_failed_round_stops_the_run_only_when_asked(tmp_path: Path) -> None:
    failed = RoundRecord(round=4, failures=["train: no result from hospital-1", "x"])
    Run(tmp_path / "continue").commit.stop_if_asked(failed)
    stopping = Run(tmp_path / "stop", **{"on-failed-round": "stop"}).commit
    stopping.stop_if_asked(RoundRecord(round=4, aggregated=True))
    with pytest.raises(RunStoppedError) as stopped:
        stopping.stop_if_asked(failed)
    assert str(stopped.value) == (
        "round 4 failed (train: no result from hospital-1; x); the run stopped, as "
        "on-failed-round=stop asks. The last complete round is 0: once the hospitals "
        "are back, continue with `fedcare run --resume <run folder>`"
    )
