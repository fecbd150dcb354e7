"""The round commit: a round's updates become the next global model, saved and audited.

Hospitals send ``local - global`` rather than their weights. The commit screens
the plaintext updates (under SecAgg+ it only ever sees their sum), averages
them (weighted by each hospital's training rows, or robustly), and applies the
mean to the global model: added as is (FedAvg), or as the pseudo-gradient of a
server optimiser (:mod:`server.server_optimizer`). It then checkpoints the
model, persists the record and the resume point, and audits each step; an empty
or rejected round keeps the previous model *and says so* in the record.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.resume import ProgressWriter
from fedcare.server.robust_aggregation import AggregationError, RobustMethod, aggregate_updates
from fedcare.server.round_book import fail_round
from fedcare.server.run_record import RoundRecord, RunRecord
from fedcare.server.server_optimizer import OptimizerState, apply_server_update
from fedcare.server.update_validation import UpdateBounds, screen_replies
from fedcare.shared.audit import AuditEvent, AuditLog
from fedcare.shared.config.federation import FailedRoundPolicy
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.server_optimizer import ServerOptimizerName
from fedcare.shared.errors import InvalidUpdateError, RunStoppedError
from fedcare.shared.keys import ReplyKey
from fedcare.shared.serialization import ModelLayout

# Why not __name__: the run log shows a round's lines under one name, whichever part
# of the aggregator writes them.
logger = logging.getLogger("fedcare.server.strategy")

Reply = tuple[str, list[np.ndarray], int]
"""A hospital's update as the commit screens it: (name, delta arrays, training rows)."""


class RoundCommit:
    """The global model, its server optimiser, and the run's files that follow each round.

    Parameters
    ----------
    config : RunConfig
        The run's configuration: SecAgg+, aggregation, server optimiser, stop policy.
    layout : ModelLayout
        Names and shapes every update must match.
    weights : list[np.ndarray]
        The global model to start from.
    record : RunRecord
        The run's record (for its epsilon summary in the round's log line).
    checkpoints : CheckpointWriter
        Saves the global model (and the optimiser's moments) after every aggregated round.
    progress : ProgressWriter
        Persists the record and the resume point.
    audit : AuditLog
        The aggregator's audit log: every update received, rejected, aggregated.
    latest_round : int
        The last round already committed (0, or the resume point).
    optimizer_state : OptimizerState
        The server optimiser's state to continue from.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        *,
        config: RunConfig,
        layout: ModelLayout,
        weights: list[np.ndarray],
        record: RunRecord,
        checkpoints: CheckpointWriter,
        progress: ProgressWriter,
        audit: AuditLog,
        latest_round: int,
        optimizer_state: OptimizerState,
    ) -> None:
        self._config = config
        self._layout = layout
        self._bounds = UpdateBounds.from_layout(
            layout,
            max_norm=config.federation.max_update_norm,
            max_examples=int(config.secure_aggregation.max_weight),
        )
        self._global = weights
        self._record = record
        self._checkpoints = checkpoints
        self._progress = progress
        self._audit = audit
        self._latest_round = latest_round
        self._optimizer_state = optimizer_state
        self._round_started = time.monotonic()

    @property
    def global_weights(self) -> list[np.ndarray]:
        """The current global model."""
        return self._global

    @property
    def latest_round(self) -> int:
        """The last round whose aggregate updated the global model (0: none yet)."""
        return self._latest_round

    def start_round(self, weights: list[np.ndarray]) -> None:
        """Start a round's clock from the global model sent to the hospitals."""
        self._global = weights
        self._round_started = time.monotonic()

    def receive(self, server_round: int, hospital: str, rows: int) -> None:
        """Audit an update received from ``hospital`` (masked under SecAgg+)."""
        self._audit.append(
            AuditEvent.UPDATE_RECEIVED,
            round=server_round,
            hospital=hospital,
            rows=rows,
            masked=self._config.secure_aggregation.enabled,
        )

    def commit(
        self, record: RoundRecord, server_round: int, updates: list[Reply], hospitals: int
    ) -> list[np.ndarray] | None:
        """Turn the round's updates into the next global model; ``None`` keeps the old one.

        ``hospitals`` is how many replied (under SecAgg+, in the sum): the
        aggregate's audit event names it.
        """
        if not self._config.secure_aggregation.enabled:
            updates = self._screen(record, server_round, updates)
        if not updates:
            fail_round(
                record, "train: no hospital returned a usable update; the global model is unchanged"
            )
            return None
        federation = self._config.federation
        try:
            mean_delta = aggregate_updates(
                RobustMethod(federation.aggregation.value),
                [(arrays, rows) for _, arrays, rows in updates],
                trim_fraction=federation.trim_fraction,
                krum_byzantine=federation.krum_byzantine,
            )
            self._layout.check(mean_delta, what="aggregated update")
        except (AggregationError, InvalidUpdateError) as error:
            fail_round(
                record, f"train: aggregate rejected ({error}); the global model is unchanged"
            )
            return None
        return self._apply(record, server_round, mean_delta, hospitals)

    def _screen(self, record: RoundRecord, server_round: int, updates: list[Reply]) -> list[Reply]:
        """Keep the plaintext updates that pass every check; report and audit the others."""
        accepted, rejected = screen_replies(updates, self._bounds)
        for rejection in rejected:
            fail_round(record, f"train: {rejection.describe()}; it was left out of the aggregate")
            self._audit.append(
                AuditEvent.UPDATE_REJECTED,
                round=server_round,
                hospital=rejection.hospital,
                reasons=list(rejection.reasons),
            )
        return accepted

    def _apply(
        self, record: RoundRecord, server_round: int, mean_delta: list[np.ndarray], hospitals: int
    ) -> list[np.ndarray]:
        """Step the global model by the mean update; checkpoint, persist and audit it."""
        policy = self._config.server_optimizer
        updated, self._optimizer_state = apply_server_update(
            policy, self._optimizer_state, self._global, mean_delta
        )
        record.aggregated = True
        self._global, self._latest_round = updated, server_round
        path = self._checkpoints.save_round(server_round, updated)
        moments = None
        if policy.optimizer is not ServerOptimizerName.NONE:
            moments = self._checkpoints.save_optimizer_state(server_round, self._optimizer_state)
        self._progress.round_aggregated(server_round, path, (self._optimizer_state.step, moments))
        self._audit.append(
            AuditEvent.AGGREGATE_COMPUTED,
            round=server_round,
            hospitals=hospitals,
            checkpoint=path.name,
            model_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        return updated

    def finish_round(self, record: RoundRecord) -> None:
        """Close a round's record: its wall time, its log line, and the saved record."""
        record.seconds = time.monotonic() - self._round_started
        self._log_round(record)
        self._progress.save_record()

    def stop_if_asked(self, record: RoundRecord) -> None:
        """Stop the run after a failed round when ``on-failed-round`` says so.

        Raises
        ------
        RunStoppedError
            Naming the round, its failures and the round a resume starts from.
        """
        if (
            record.aggregated
            or self._config.federation.on_failed_round is FailedRoundPolicy.CONTINUE
        ):
            return
        raise RunStoppedError(
            f"round {record.round} failed ({'; '.join(record.failures)}); the run stopped, as "
            f"on-failed-round=stop asks. The last complete round is {self._latest_round}: once "
            "the hospitals are back, continue with `fedcare run --resume <run folder>`"
        )

    def _log_round(self, record: RoundRecord) -> None:
        headline = record.test_metrics or record.federated_metrics
        scores = ", ".join(
            f"{name} {value:.3f}"
            for name, value in list(headline.items())[:2]
            if name != ReplyKey.LOSS
        )
        logger.info(
            "round %s/%s: %s | epsilon spent: %s",
            record.round,
            self._config.federation.rounds,
            scores or "no metrics",
            self._record.epsilon_summary() or "none reported",
        )
