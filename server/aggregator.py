"""Run a whole federation from the aggregator's side and write its report.

Flower-free apart from the grid and context it passes through to
:func:`server.secure_aggregation.run_rounds`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid

from server.checkpoint import CheckpointWriter
from server.reference import DataReference
from server.report import AUDIT_FILE, CONFIG_JSON, write_report
from server.run_directory import RunDirectory
from server.run_record import RunRecord
from server.secure_aggregation import run_rounds
from server.strategy import FedCareStrategy, TestEvaluator
from shared.audit import AuditEvent, AuditLog
from shared.config import RunConfig
from shared.evaluation import Evaluation, evaluate_model
from shared.models import build_model
from shared.serialization import ModelLayout, get_weights, set_weights

logger = logging.getLogger(__name__)

COMPLETED = "completed"
FAILED = "failed"


def _build_model(config: RunConfig, reference: DataReference) -> torch.nn.Module:
    return build_model(
        config.training.model,
        input_shape=reference.input_shape,
        input_kind=reference.input_kind,
        task=reference.task,
        seed=config.data.seed,
    )


def _test_evaluator(config: RunConfig, reference: DataReference) -> TestEvaluator | None:
    test = reference.test
    if test is None:
        return None
    model = _build_model(config, reference)

    def evaluate(weights: list[np.ndarray]) -> Evaluation:
        set_weights(model, weights, what="global model")
        return evaluate_model(model, test, reference.task, torch.device("cpu"))

    return evaluate


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
    run_dir.write_json(CONFIG_JSON, config.to_flat())
    model = _build_model(config, reference)
    layout = ModelLayout.of(model)
    checkpoints = CheckpointWriter(
        run_dir,
        layout,
        {
            "model": config.training.model.value,
            "task": reference.task.kind.value,
            "features": ",".join(reference.feature_names),
        },
    )
    record = RunRecord()
    audit = AuditLog(run_dir.path / AUDIT_FILE, actor="aggregator")
    audit.append(AuditEvent.RUN_STARTED, config=config.to_flat(), model=config.training.model.value)
    strategy = FedCareStrategy(
        config=config,
        initial_weights=get_weights(model),
        layout=layout,
        minimum_hospitals=config.federation.min_hospitals,
        record=record,
        checkpoints=checkpoints,
        test_evaluator=_test_evaluator(config, reference),
        audit=audit,
    )
    status = FAILED
    try:
        run_rounds(
            grid,
            context,
            strategy,
            federation=config.federation,
            secure_aggregation=config.secure_aggregation,
        )
        status = COMPLETED
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
        )
        logger.info("run %s; report in %s", status, run_dir.path)
    return summary
