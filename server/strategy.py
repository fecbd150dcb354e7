"""The aggregation strategy: FedAvg over model *deltas*, recording every reply.

Hospitals send ``local - global`` rather than their weights: deltas are small, so
SecAgg+'s fixed-point encoding keeps more precision within its clipping range.
The strategy averages them (weighted by each hospital's training rows; under
SecAgg+ it only ever sees the sum) and applies the mean to the global model:
added as is (FedAvg), or as the pseudo-gradient of a server optimiser
(:mod:`server.server_optimizer`: FedAdam, FedYogi, FedAdagrad).

Notes
-----
This is a legacy ``flwr.server.strategy`` because Flower 1.41 runs SecAgg+ only on
the legacy stack. Every round waits for all hospitals until the round deadline
and then goes on with those present, if at least ``minimum_hospitals`` are; an
empty or rejected round keeps the previous model *and says so* in the record.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.resume import ProgressWriter
from fedcare.server.robust_aggregation import AggregationError, RobustMethod, aggregate_updates
from fedcare.server.run_record import RoundRecord, RunRecord
from fedcare.server.secure_aggregation import Exchange
from fedcare.server.server_optimizer import OptimizerState, apply_server_update
from fedcare.server.update_validation import UpdateBounds, screen_replies
from fedcare.shared.audit import AuditEvent, AuditLog
from fedcare.shared.config.federation import FailedRoundPolicy
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.server_optimizer import ServerOptimizerName
from fedcare.shared.errors import InvalidUpdateError, RunStoppedError
from fedcare.shared.evaluation import Evaluation
from fedcare.shared.keys import NOISY_SUM_KEY, InstructionKey, ReplyKey
from fedcare.shared.metrics import weighted_mean
from fedcare.shared.private_metrics import pooled_metrics
from fedcare.shared.serialization import ModelLayout
from fedcare.shared.tasks import Task

logger = logging.getLogger(__name__)

TestEvaluator = Callable[[list[np.ndarray]], Evaluation]
Reply = tuple[str, list[np.ndarray], int]
"""A hospital's update as the strategy screens it: (name, delta arrays, training rows)."""
Failure = tuple[ClientProxy, FitRes] | tuple[ClientProxy, EvaluateRes] | BaseException


class FedCareStrategy(FedAvg):
    """Weighted FedAvg of deltas, with deadlines, checks, records and checkpoints.

    Parameters
    ----------
    config : RunConfig
        The run's configuration; sent to every hospital with each instruction.
    initial_weights : list[np.ndarray]
        The initial global model.
    layout : ModelLayout
        Names and shapes every update must match.
    minimum_hospitals : int
        Fewest hospitals a round may run with (SecAgg+ needs its threshold).
    record : RunRecord
        Filled in as the run goes.
    checkpoints : CheckpointWriter
        Saves the global model after every aggregated round.
    test_evaluator : TestEvaluator | None
        Scores a global model on the aggregator's held-out test set, if it has one.
    task : Task | None
        What the model learns: the federated metrics are computed from the
        hospitals' pooled noisy evaluation sums for it (without it, or without
        sums, they are the row-weighted mean of the hospitals' metrics).
    audit : AuditLog
        The aggregator's audit log: every update received, every aggregate computed.
    progress : ProgressWriter
        Persists the record and the resume point after every round.
    first_round : int
        The run's round number of Flower's round 1: 1, or the round after the
        resume point when a stopped run is resumed.
    optimizer_state : OptimizerState
        The server optimiser's state to continue from (restored on a resume).
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        *,
        config: RunConfig,
        initial_weights: list[np.ndarray],
        layout: ModelLayout,
        minimum_hospitals: int,
        record: RunRecord,
        checkpoints: CheckpointWriter,
        test_evaluator: TestEvaluator | None,
        audit: AuditLog,
        task: Task | None = None,
        progress: ProgressWriter,
        first_round: int = 1,
        optimizer_state: OptimizerState | None = None,
    ) -> None:
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=minimum_hospitals,
            min_evaluate_clients=minimum_hospitals,
            min_available_clients=minimum_hospitals,
            initial_parameters=ndarrays_to_parameters(initial_weights),
            accept_failures=True,
        )
        self._config = config
        self._minimum = minimum_hospitals
        self._record = record
        self._checkpoints = checkpoints
        self._test_evaluator = test_evaluator
        self._task = task
        self._audit = audit
        self._progress = progress
        self._offset = first_round - 1
        self._layout = layout
        self._bounds = UpdateBounds.from_layout(
            layout,
            max_norm=config.federation.max_update_norm,
            max_examples=int(config.secure_aggregation.max_weight),
        )
        self._global: list[np.ndarray] = initial_weights
        self._optimizer_state = optimizer_state or OptimizerState()
        self._latest_round = self._offset
        self._round_started = time.monotonic()
        self._names: dict[int, str] = config.federation.names_by_node()
        self._asked: dict[str, set[int]] = {}
        self._evaluation_rounds = config.evaluation_round_numbers()
        self._erred: dict[str, set[int]] = {}
        # Whether this round's training ended in the strategy (aggregated, or failed and
        # said why); if not, SecAgg+ halted before it could.
        self._train_concluded = False

    @property
    def global_weights(self) -> list[np.ndarray]:
        """The current global model."""
        return self._global

    @property
    def latest_round(self) -> int:
        """The last round whose aggregate updated the global model (0: none yet)."""
        return self._latest_round

    def __repr__(self) -> str:
        return f"FedCareStrategy(hospitals={self._config.data.hospitals}, minimum={self._minimum})"

    # --- instructions -----------------------------------------------------------

    def _run_round(self, flower_round: int) -> int:
        """Return the run's round of Flower's ``flower_round`` (they differ after a resume)."""
        return flower_round + self._offset

    def _instruction(self, server_round: int) -> dict[str, Scalar]:
        instruction: dict[str, Scalar] = dict(self._config.to_flat())
        instruction[InstructionKey.SERVER_ROUND] = server_round
        return instruction

    def _sample(
        self, server_round: int, client_manager: ClientManager, stage: str
    ) -> list[ClientProxy]:
        expected = self._config.data.hospitals
        timeout = self._config.federation.round_timeout
        waited = time.monotonic()
        client_manager.wait_for(expected, timeout=int(timeout))
        self._record.round(server_round).stage_seconds[f"wait-{stage}"] = time.monotonic() - waited
        available = client_manager.num_available()
        if available < self._minimum:
            self._fail(
                self._record.round(server_round),
                f"{stage}: only {available} of {expected} hospitals connected within "
                f"{timeout:.0f} s; at least {self._minimum} are needed",
            )
            if stage == "train":
                self._train_concluded = True
            return []
        sampled = client_manager.sample(num_clients=available, min_num_clients=self._minimum)
        self._asked[stage] = {proxy.node_id for proxy in sampled}
        if stage == "train":
            self._record.round(server_round).asked = sorted(
                self._describe(proxy.node_id) for proxy in sampled
            )
        return sampled

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Send the global model and the run config to every connected hospital."""
        server_round = self._run_round(server_round)
        self._global = parameters_to_ndarrays(parameters)
        self._round_started = time.monotonic()
        self._train_concluded = False
        fit_ins = FitIns(parameters, self._instruction(server_round))
        sampled = self._sample(server_round, client_manager, "train")
        logger.info(
            "round %s/%s: %s hospitals asked to train",
            server_round,
            self._config.federation.rounds,
            len(sampled),
        )
        return [(c, fit_ins) for c in sampled]

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Ask every connected hospital to evaluate the global model locally, in evaluation rounds.

        Each hospital evaluation spends privacy budget, so hospitals are asked only
        in the run's ``evaluation-rounds``; any other round ends here.
        """
        server_round = self._run_round(server_round)
        sampled = (
            self._sample(server_round, client_manager, "evaluate")
            if server_round in self._evaluation_rounds
            else []
        )
        if not sampled:  # Flower calls no aggregate_evaluate: the round ends here
            self._finish_round(self._record.round(server_round))
            return []
        evaluate_ins = EvaluateIns(parameters, self._instruction(server_round))
        return [(proxy, evaluate_ins) for proxy in sampled]

    # --- aggregation ------------------------------------------------------------

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Average the hospitals' deltas into a new global model and checkpoint it."""
        server_round = self._run_round(server_round)
        record = self._record.round(server_round)
        self._train_concluded = True
        self._note_failures(record, "train", failures)
        self._note_silent(record, "train", results, failures)
        updates: list[Reply] = []
        for proxy, res in results:
            name = self._learn_name(proxy, res.metrics)
            hospital = record.hospital(name)
            hospital.train = _scalars(res.metrics, without=PRIVACY_KEYS)
            hospital.privacy |= _scalars(res.metrics, only=PRIVACY_KEYS)
            hospital.num_train_examples = res.num_examples
            self._audit.append(
                AuditEvent.UPDATE_RECEIVED,
                round=server_round,
                hospital=name,
                rows=res.num_examples,
                masked=self._config.secure_aggregation.enabled,
            )
            updates.append((name, parameters_to_ndarrays(res.parameters), res.num_examples))
        if not self._config.secure_aggregation.enabled:
            updates = self._screen(record, server_round, updates)
        if not updates:
            self._fail(
                record, "train: no hospital returned a usable update; the global model is unchanged"
            )
            return None, {}
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
            self._fail(
                record, f"train: aggregate rejected ({error}); the global model is unchanged"
            )
            return None, {}
        updated = self._apply(record, server_round, mean_delta, hospitals=len(results))
        return ndarrays_to_parameters(updated), {}

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

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Record each hospital's local metrics and their row-weighted mean."""
        server_round = self._run_round(server_round)
        record = self._record.round(server_round)
        self._note_failures(record, "evaluate", failures)
        self._note_silent(record, "evaluate", results, failures)
        for proxy, res in results:
            hospital = record.hospital(self._learn_name(proxy, res.metrics))
            hospital.evaluation = _metrics(res.metrics)
            hospital.privacy |= _scalars(res.metrics, only=PRIVACY_KEYS)
            hospital.num_eval_examples = res.num_examples
        loss = None
        if results:
            record.federated_metrics = self._federated_metrics(results)
            loss = record.federated_metrics.get(ReplyKey.LOSS)
        self._finish_round(record)
        return loss, dict(record.federated_metrics)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Score the global model on the held-out test set, when there is one."""
        if server_round == 0 and self._offset:
            return None  # a resumed run's starting model was scored in its own round
        server_round = self._run_round(server_round)
        if server_round > 0:
            self._check_trained(self._record.round(server_round))
            self._stop_if_asked(self._record.round(server_round))
        if self._test_evaluator is None:
            return None
        result = self._test_evaluator(parameters_to_ndarrays(parameters))
        self._record.round(server_round).test_metrics = dict(result.metrics)
        return result.loss, dict(result.metrics)

    # --- bookkeeping ------------------------------------------------------------

    def observe_exchange(self, exchange: Exchange) -> None:
        """Record an exchange's time and every error reply, naming the hospital that sent it."""
        record = self._record.round(self._run_round(exchange.flower_round))
        spent = record.stage_seconds.get(exchange.stage, 0.0)
        record.stage_seconds[exchange.stage] = spent + exchange.seconds
        kind = "evaluate" if exchange.stage == "evaluate" else "train"
        for node_id, reason in exchange.errors:
            self._erred.setdefault(kind, set()).add(node_id)
            self._fail(record, f"{kind}: {self._describe(node_id)}: {reason}")

    def _screen(self, record: RoundRecord, server_round: int, updates: list[Reply]) -> list[Reply]:
        """Keep the plaintext updates that pass every check; report and audit the others."""
        accepted, rejected = screen_replies(updates, self._bounds)
        for rejection in rejected:
            self._fail(record, f"train: {rejection.describe()}; it was left out of the aggregate")
            self._audit.append(
                AuditEvent.UPDATE_REJECTED,
                round=server_round,
                hospital=rejection.hospital,
                reasons=list(rejection.reasons),
            )
        return accepted

    def _federated_metrics(
        self, results: list[tuple[ClientProxy, EvaluateRes]]
    ) -> dict[str, float]:
        """Metrics of the hospitals together: from their pooled noisy sums when they sent them."""
        pooled = (
            pooled_metrics(self._task, [res.metrics for _, res in results]) if self._task else None
        )
        if pooled is not None:
            return {k: v for k, v in pooled.items() if not math.isnan(v)}
        weights = [res.num_examples for _, res in results]
        return weighted_mean([_metrics(res.metrics) for _, res in results], weights)

    def _finish_round(self, record: RoundRecord) -> None:
        """Close a round's record: its wall time, its log line, and the saved record."""
        record.seconds = time.monotonic() - self._round_started
        self._log_round(record)
        self._progress.save_record()

    def _fail(self, record: RoundRecord, message: str) -> None:
        record.failures.append(message)
        logger.error("round %s %s", record.round, message)

    def _check_trained(self, record: RoundRecord) -> None:
        """Make a round that never reached aggregation an error in the record.

        SecAgg+ halts without calling the strategy when too few hospitals finish
        its stages; Flower then goes on to evaluation with the old model.
        """
        if record.aggregated or self._train_concluded:
            return
        unfinished = ", ".join(self._describe(n) for n in sorted(self._asked.pop("train", set())))
        self._fail(
            record,
            "train: secure aggregation halted before aggregating (too few hospitals completed "
            f"the protocol; asked: {unfinished or 'none'}); the global model is unchanged",
        )

    def _stop_if_asked(self, record: RoundRecord) -> None:
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

    def _learn_name(self, proxy: ClientProxy, metrics: dict[str, Scalar]) -> str:
        """Name the hospital behind ``proxy`` by its authenticated node, never by its reply.

        A deployment's names come from the aggregator's registry of node keys
        (``hospital-names``, which ``fedcare run`` always sets; only a registered
        node can connect); a name a reply claims is only compared with it. A
        simulation, on built-in data or the user's own files, has no node keys
        and no registry: its virtual hospitals are fedcare's own code in this
        process, and their replies name them.
        """
        claimed = metrics.get(ReplyKey.HOSPITAL)
        if not self._config.federation.hospital_names:
            if isinstance(claimed, str):
                self._names[proxy.node_id] = claimed
        elif isinstance(claimed, str) and claimed != self._names.get(proxy.node_id):
            logger.warning(
                "%s replied as %r; it is reported under its registered name",
                self._describe(proxy.node_id),
                claimed[:80],
            )
        return self._describe(proxy.node_id)

    def _describe(self, node_id: int) -> str:
        """Return a hospital's name (registered, or in simulation its own), else its node id."""
        return self._names.get(node_id, f"node {node_id}")

    def _note_failures(self, record: RoundRecord, stage: str, failures: Sequence[Failure]) -> None:
        for failure in failures:
            # An error reply arrives as a bare exception; observe_exchange recorded it
            # already, with the hospital that sent it.
            if not isinstance(failure, BaseException):
                proxy, res = failure
                self._fail(
                    record, f"{stage}: {self._describe(proxy.node_id)}: {res.status.message}"
                )

    def _note_silent(
        self,
        record: RoundRecord,
        stage: str,
        results: list[tuple[ClientProxy, FitRes]] | list[tuple[ClientProxy, EvaluateRes]],
        failures: Sequence[Failure],
    ) -> None:
        """Record every hospital that was asked and returned neither a result nor an error.

        Error replies were recorded with their sender by :meth:`observe_exchange`
        (Flower's legacy workflows strip the sender from them); a hospital that
        sent none either dropped out or missed the deadline.
        """
        answered = {proxy.node_id for proxy, _ in results} | self._erred.pop(stage, set())
        answered |= {f[0].node_id for f in failures if not isinstance(f, BaseException)}
        for node_id in sorted(self._asked.pop(stage, set()) - answered):
            self._fail(
                record,
                f"{stage}: no result from {self._describe(node_id)} (dropped out or missed "
                "the deadline)",
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


PRIVACY_KEYS = frozenset(
    {
        ReplyKey.EPSILON,
        ReplyKey.TRAINING_EPSILON,
        ReplyKey.EVALUATION_EPSILON,
        ReplyKey.DATASET_EPSILON,
    }
)
"""Reply scalars that say what a hospital has spent, kept apart from its metrics."""


def _metrics(reply: dict[str, Scalar]) -> dict[str, float]:
    """Return a reply's evaluation metrics: without what it spent or its raw noisy sums."""
    return {
        key: value
        for key, value in _scalars(reply, without=PRIVACY_KEYS).items()
        if not NOISY_SUM_KEY.fullmatch(key)
    }


def _scalars(
    metrics: dict[str, Scalar],
    without: frozenset[str] = frozenset(),
    only: frozenset[str] | None = None,
) -> dict[str, float]:
    """Return the numeric entries of a reply (``only`` those keys, if given), minus ``without``."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if key not in without
        and (only is None or key in only)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }
