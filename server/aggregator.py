"""Run a whole federation from the aggregator's side and write its report.

Flower-free apart from the grid and context it passes through to
:func:`server.secure_aggregation.run_rounds`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid

from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.model_card import INTERVAL_TASKS, TestScores
from fedcare.server.reference import DataReference
from fedcare.server.report import AUDIT_FILE, CONFIG_JSON, write_report
from fedcare.server.resume import (
    ProgressWriter,
    load_resume_point,
    restored_record,
    resume_optimizer_state,
    resume_weights,
)
from fedcare.server.run_directory import RunDirectory
from fedcare.server.run_record import RunRecord
from fedcare.server.secure_aggregation import run_rounds
from fedcare.server.server_optimizer import OptimizerState
from fedcare.server.strategy import FedCareStrategy, TestEvaluator
from fedcare.shared.audit import AuditEvent, AuditLog
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError, RunStoppedError
from fedcare.shared.evaluation import Evaluation, evaluate_model
from fedcare.shared.run_model import RunModel, build_run_model
from fedcare.shared.scoring import score_examples
from fedcare.shared.serialization import (
    ModelLayout,
    get_weights,
    load_matching_weights,
    set_weights,
)

logger = logging.getLogger(__name__)

COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"


def log_rounds_to_stream() -> None:
    """Print fedcare's INFO lines on stderr: each round's start and its result line.

    A deployed ServerApp runs in Flower's own process, which streams its output
    to ``flwr run --stream`` (``fedcare run`` draws its progress from them) but
    whose root logger passes on warnings only. Idempotent.
    """
    fedcare_logger = logging.getLogger("fedcare")
    if any(getattr(h, "fedcare_stream", False) for h in fedcare_logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s : %(message)s"))
    handler.fedcare_stream = True  # type: ignore[attr-defined]
    fedcare_logger.addHandler(handler)
    fedcare_logger.setLevel(logging.INFO)
    fedcare_logger.propagate = False


def _build_model(config: RunConfig, reference: DataReference) -> RunModel:
    return build_run_model(
        config.training,
        input_shape=reference.input_shape,
        input_kind=reference.input_kind,
        task=reference.task,
        seed=config.data.seed,
        private=config.privacy.enabled,
        party="the aggregator",
    )


def _initial_model(config: RunConfig, reference: DataReference) -> RunModel:
    """Build the run's first global model: fresh, or partly loaded from ``initial-model``."""
    run_model = _build_model(config, reference)
    model = run_model.module
    if config.training.initial_model:
        loaded = load_matching_weights(model, Path(config.training.initial_model))
        logger.info(
            "initialised %s of %s tensors from %s",
            len(loaded),
            len(model.state_dict()),
            config.training.initial_model,
        )
    for line in run_model.fixed_layers:
        logger.warning("fix-model replaced %s", line)
    return run_model


def checkpoint_metadata(config: RunConfig, reference: DataReference) -> dict[str, str]:
    """Return what every checkpoint records about its model, so it can be used on its own."""
    return {
        "model": config.training.model,
        "task": reference.task.kind.value,
        "features": ",".join(reference.feature_names),
        # Regression targets are learnt scaled: whoever uses the model needs the constants.
        "target-center": str(reference.task.target_center),
        "target-scale": str(reference.task.target_scale),
    }


def _test_evaluator(config: RunConfig, reference: DataReference) -> TestEvaluator | None:
    test = reference.test
    if test is None:
        return None
    model = _build_model(config, reference).module

    def evaluate(weights: list[np.ndarray]) -> Evaluation:
        set_weights(model, weights, what="global model")
        return evaluate_model(model, test, reference.task, torch.device("cpu"))

    return evaluate


def _test_scores(
    config: RunConfig, reference: DataReference, weights: list[np.ndarray]
) -> TestScores | None:
    """Score the held-out test set with the final model, for the model card (simulation)."""
    test = reference.test
    if test is None or reference.task.kind not in INTERVAL_TASKS:
        return None
    model = _build_model(config, reference).module
    set_weights(model, weights, what="final global model")
    scores = score_examples(model, test.features, reference.task, torch.device("cpu"))
    if not np.all(np.isfinite(scores)):
        return None
    return TestScores(labels=test.labels, scores=scores)


@dataclass(frozen=True)
class StartingPoint:
    """Where a run starts: round 1 from the initial model, or after its resume point."""

    first_round: int
    weights: list[np.ndarray]
    record: RunRecord
    ledger_run: str
    optimizer_state: OptimizerState


def _starting_point(
    run_dir: RunDirectory,
    config: RunConfig,
    layout: ModelLayout,
    initial_weights: list[np.ndarray],
    flower_run: str,
) -> StartingPoint:
    if not config.output.resume:
        return StartingPoint(
            1,
            initial_weights,
            RunRecord(),
            config.privacy.ledger_run or flower_run,
            OptimizerState(),
        )
    point = load_resume_point(run_dir, config, layout)
    if point.completed_round >= config.federation.rounds:
        raise ConfigError(
            "resume",
            f"{run_dir.path} already completed all {config.federation.rounds} rounds; "
            "nothing to resume",
        )
    return StartingPoint(
        first_round=point.completed_round + 1,
        weights=resume_weights(run_dir, point, layout),
        record=restored_record(run_dir, point),
        ledger_run=point.ledger_run,
        optimizer_state=resume_optimizer_state(run_dir, point, config, layout),
    )


def run_aggregator(
    grid: Grid,
    context: Context,
    *,
    config: RunConfig,
    reference: DataReference,
    run_dir: RunDirectory,
) -> dict[str, Any]:
    """Run every round, checkpoint each, and write the report even if the run fails.

    Returns
    -------
    dict[str, Any]
        The run summary (also in ``summary.json``).
    """
    for warning in config.weakened_protections():
        logger.warning("PROTECTION OFF: %s", warning)
    run_model = _initial_model(config, reference)
    model = run_model.module
    layout = ModelLayout.of(model)
    start = _starting_point(run_dir, config, layout, get_weights(model), str(context.run_id))
    config = replace(config, privacy=replace(config.privacy, ledger_run=start.ledger_run))
    run_dir.write_json(CONFIG_JSON, config.to_flat())
    checkpoints = CheckpointWriter(run_dir, layout, checkpoint_metadata(config, reference))
    record = start.record
    audit = _start_audit(run_dir, config, start.first_round)
    strategy = _strategy(
        config, reference, layout, start, run_dir=run_dir, checkpoints=checkpoints, audit=audit
    )
    status = FAILED
    try:
        _run_rounds(grid, context, strategy, config, start.first_round)
        status = COMPLETED
    except RunStoppedError as error:
        # A stop the configuration asked for: reported and resumable, not a crash.
        record.errors.append(str(error))
        status = STOPPED
    except Exception as error:
        record.errors.append(f"the run stopped: {type(error).__name__}: {error}")
        raise
    finally:
        checkpoints.save_final(strategy.latest_round, strategy.global_weights)
        summary = write_report(
            run_dir,
            config=config,
            record=record,
            reference=reference,
            status=status,
            audit_head=audit.head(),
            test=_test_scores(config, reference, strategy.global_weights),
            model=run_model.describe(config.training),
        )
        logger.info("run %s; report in %s", status, run_dir.path)
    return summary


def _strategy(  # noqa: PLR0913 - the run's parts the strategy writes to
    config: RunConfig,
    reference: DataReference,
    layout: ModelLayout,
    start: StartingPoint,
    *,
    run_dir: RunDirectory,
    checkpoints: CheckpointWriter,
    audit: AuditLog,
) -> FedCareStrategy:
    """Build the strategy that runs the rounds from ``start``, writing into the run's folder."""
    return FedCareStrategy(
        config=config,
        initial_weights=start.weights,
        layout=layout,
        minimum_hospitals=config.federation.min_hospitals,
        record=start.record,
        checkpoints=checkpoints,
        test_evaluator=_test_evaluator(config, reference),
        task=reference.task,
        audit=audit,
        progress=ProgressWriter(
            run_dir, start.record, config=config, layout=layout, ledger_run=start.ledger_run
        ),
        first_round=start.first_round,
        optimizer_state=start.optimizer_state,
    )


def _start_audit(run_dir: RunDirectory, config: RunConfig, first_round: int) -> AuditLog:
    """Open the run's audit log and record that the run started, or resumed."""
    audit = AuditLog(run_dir.path / AUDIT_FILE, actor="aggregator")
    if first_round > 1:
        audit.append(AuditEvent.RUN_RESUMED, round=first_round, config=config.to_flat())
        logger.info("resuming %s at round %s", run_dir.path, first_round)
    else:
        audit.append(AuditEvent.RUN_STARTED, config=config.to_flat(), model=config.training.model)
    return audit


def _run_rounds(
    grid: Grid, context: Context, strategy: FedCareStrategy, config: RunConfig, first_round: int
) -> None:
    """Run the rounds from ``first_round`` to the run's last through Flower's workflow."""
    run_rounds(
        grid,
        context,
        strategy,
        rounds=config.federation.rounds - first_round + 1,
        federation=config.federation,
        secure_aggregation=config.secure_aggregation,
        hospitals=config.data.hospitals,
        observer=strategy.observe_exchange,
    )
