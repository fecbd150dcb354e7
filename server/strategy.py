"""The aggregation strategy: Flower's glue over the round book and the round commit.

Hospitals send ``local - global`` rather than their weights: deltas are small, so
SecAgg+'s fixed-point encoding keeps more precision within its clipping range.
The strategy unpacks Flower's replies; :mod:`server.round_book` books who was
asked, replied, failed or stayed silent, and :mod:`server.round_commit` turns
the updates into the next global model (FedAvg, or a server optimiser) and
saves, persists and audits it.

Notes
-----
This is a legacy ``flwr.server.strategy`` because Flower 1.41 runs SecAgg+ only on
the legacy stack. Every round waits for all hospitals until the round deadline
and then goes on with those present, if at least ``minimum_hospitals`` are; an
empty or rejected round keeps the previous model *and says so* in the record.
"""

from __future__ import annotations

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
from fedcare.server.round_book import EVALUATE, TRAIN, RoundBook, fail_round
from fedcare.server.round_commit import Reply, RoundCommit
from fedcare.server.run_record import RunRecord
from fedcare.server.secure_aggregation import Exchange
from fedcare.server.server_optimizer import OptimizerState
from fedcare.shared.audit import AuditLog
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.evaluation import Evaluation
from fedcare.shared.keys import NOISY_SUM_KEY, PERSONALISED_METRICS, InstructionKey, ReplyKey
from fedcare.shared.metrics import weighted_mean
from fedcare.shared.private_metrics import pooled_metrics
from fedcare.shared.serialization import ModelLayout
from fedcare.shared.tasks import Task

logger = logging.getLogger(__name__)

TestEvaluator = Callable[[list[np.ndarray]], Evaluation]
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
        self._test_evaluator = test_evaluator
        self._task = task
        self._offset = first_round - 1
        self._evaluation_rounds = config.evaluation_round_numbers()
        self._book = RoundBook(
            config.federation.names_by_node(),
            registered=bool(config.federation.hospital_names),
        )
        self._commit = RoundCommit(
            config=config,
            layout=layout,
            weights=initial_weights,
            record=record,
            checkpoints=checkpoints,
            progress=progress,
            audit=audit,
            latest_round=self._offset,
            optimizer_state=optimizer_state or OptimizerState(),
        )

    @property
    def global_weights(self) -> list[np.ndarray]:
        """The current global model."""
        return self._commit.global_weights

    @property
    def latest_round(self) -> int:
        """The last round whose aggregate updated the global model (0: none yet)."""
        return self._commit.latest_round

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
        record = self._record.round(server_round)
        waited = time.monotonic()
        client_manager.wait_for(expected, timeout=int(timeout))
        record.stage_seconds[f"wait-{stage}"] = time.monotonic() - waited
        available = client_manager.num_available()
        if available < self._minimum:
            fail_round(
                record,
                f"{stage}: only {available} of {expected} hospitals connected within "
                f"{timeout:.0f} s; at least {self._minimum} are needed",
            )
            if stage == TRAIN:
                self._book.conclude_training()
            return []
        sampled = client_manager.sample(num_clients=available, min_num_clients=self._minimum)
        self._book.ask(record, stage, (proxy.node_id for proxy in sampled))
        return sampled

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Send the global model and the run config to every connected hospital."""
        server_round = self._run_round(server_round)
        self._commit.start_round(parameters_to_ndarrays(parameters))
        self._book.start_training()
        fit_ins = FitIns(parameters, self._instruction(server_round))
        sampled = self._sample(server_round, client_manager, TRAIN)
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
            self._sample(server_round, client_manager, EVALUATE)
            if server_round in self._evaluation_rounds
            else []
        )
        if not sampled:  # Flower calls no aggregate_evaluate: the round ends here
            self._commit.finish_round(self._record.round(server_round))
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
        self._book.conclude_training()
        self._note_replies(TRAIN, server_round, [proxy.node_id for proxy, _ in results], failures)
        updates: list[Reply] = []
        for proxy, res in results:
            name = self._book.learn_name(proxy.node_id, res.metrics.get(ReplyKey.HOSPITAL))
            hospital = record.hospital(name)
            hospital.train = _scalars(res.metrics, without=PRIVACY_KEYS)
            hospital.privacy |= _scalars(res.metrics, only=PRIVACY_KEYS)
            hospital.num_train_examples = res.num_examples
            self._commit.receive(server_round, name, res.num_examples)
            updates.append((name, parameters_to_ndarrays(res.parameters), res.num_examples))
        updated = self._commit.commit(record, server_round, updates, hospitals=len(results))
        if updated is None:
            return None, {}
        return ndarrays_to_parameters(updated), {}

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Record each hospital's local metrics and their row-weighted mean."""
        server_round = self._run_round(server_round)
        record = self._record.round(server_round)
        answered = [proxy.node_id for proxy, _ in results]
        self._note_replies(EVALUATE, server_round, answered, failures)
        for proxy, res in results:
            name = self._book.learn_name(proxy.node_id, res.metrics.get(ReplyKey.HOSPITAL))
            hospital = record.hospital(name)
            hospital.evaluation = _metrics(res.metrics)
            hospital.privacy |= _scalars(res.metrics, only=PRIVACY_KEYS)
            hospital.num_eval_examples = res.num_examples
        loss = None
        if results:
            record.federated_metrics = self._federated_metrics(results)
            loss = record.federated_metrics.get(ReplyKey.LOSS)
        self._commit.finish_round(record)
        return loss, dict(record.federated_metrics)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Score the global model on the held-out test set, when there is one."""
        if server_round == 0 and self._offset:
            return None  # a resumed run's starting model was scored in its own round
        server_round = self._run_round(server_round)
        if server_round > 0:
            self._book.check_trained(self._record.round(server_round))
            self._commit.stop_if_asked(self._record.round(server_round))
        if self._test_evaluator is None:
            return None
        result = self._test_evaluator(parameters_to_ndarrays(parameters))
        self._record.round(server_round).test_metrics = dict(result.metrics)
        return result.loss, dict(result.metrics)

    # --- bookkeeping ------------------------------------------------------------

    def observe_exchange(self, exchange: Exchange) -> None:
        """Record an exchange's time and every error reply, naming the hospital that sent it."""
        record = self._record.round(self._run_round(exchange.flower_round))
        self._book.note_exchange(record, exchange.stage, exchange.seconds, exchange.errors)

    def _note_replies(
        self, stage: str, server_round: int, answered: list[int], failures: Sequence[Failure]
    ) -> None:
        """Book a stage's failed replies, then every hospital asked that sent nothing.

        An error reply arrives as a bare exception; :meth:`observe_exchange`
        booked it already, with the hospital that sent it.
        """
        record = self._record.round(server_round)
        failed = [
            (failure[0].node_id, failure[1].status.message)
            for failure in failures
            if not isinstance(failure, BaseException)
        ]
        self._book.note_failures(record, stage, failed)
        self._book.note_silent(record, stage, answered + [node_id for node_id, _ in failed])

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
        # The global model's metrics only: personalised ones describe each hospital's own model.
        global_only = [
            {k: v for k, v in _metrics(res.metrics).items() if k not in PERSONALISED_METRICS}
            for _, res in results
        ]
        return weighted_mean(global_only, weights)


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
