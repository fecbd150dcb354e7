"""The one place that drives Flower's legacy workflow, SecAgg+ included.

Flower 1.41 runs SecAgg+ only through ``LegacyContext`` + ``DefaultWorkflow`` +
``SecAggPlusWorkflow``; this module hides that, and adds the deadline Flower's
default legacy workflows lack (their ``send_and_receive`` waits forever). Every
exchange with the hospitals passes through :class:`DeadlineGrid`, which times it
and reports it (with every error reply and its sender) to an observer: the
strategy writes the stage times and the hospitals' refusals into the run record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flwr.app import Context, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedcare.shared.config.federation import FederationSettings
from fedcare.shared.config.secagg import SecureAggregationSettings

REPLY_POLL_SECONDS = 0.2
"""Longest wait between two requests for replies. Flower's HTTP grid waits 3 s between
pulls; SecAgg+ makes four exchanges per round, so a tighter poll saves seconds on
every round for the cost of a few small requests to the local SuperLink."""

FIRST_POLL_SECONDS = 0.005
"""First wait for replies; each later wait is half as long again, up to
:data:`REPLY_POLL_SECONDS`. A simulated hospital answers in milliseconds, and a
fixed 0.2 s poll added up to a second to each of its five exchanges per round;
the growing wait oversleeps a reply by at most half the time already waited."""


@dataclass(frozen=True)
class Exchange:
    """One ``send_and_receive``: which round and stage, how long, and who answered with an error.

    Attributes
    ----------
    flower_round : int
        Flower's round number (the messages' group id); 0 if they carry none.
    stage : str
        ``train`` or ``evaluate``, or the SecAgg+ stage of a training exchange
        (``setup``, ``share_keys``, ``collect_masked_vectors``, ``unmask``).
    seconds : float
        From sending to the last reply (or the deadline).
    errors : tuple[tuple[int, str], ...]
        ``(node id, reason)`` of every error reply.
    """

    flower_round: int
    stage: str
    seconds: float
    errors: tuple[tuple[int, str], ...] = ()


ExchangeObserver = Callable[[Exchange], None]


def exchange_stage(message: Message) -> str:
    """Name what ``message`` asks for: its SecAgg+ stage, else its message type."""
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.STAGE in configs:
        return str(configs[Key.STAGE])
    return str(message.metadata.message_type)


class DeadlineGrid(Grid):
    """A :class:`Grid` whose ``send_and_receive`` has a deadline, a short poll and an observer.

    Parameters
    ----------
    grid : Grid
        The grid Flower handed the ServerApp.
    timeout : float
        Seconds any one exchange may take; replies arriving later are not collected.
    observer : ExchangeObserver | None
        Told about every exchange once it is over.
    """

    def __init__(
        self, grid: Grid, timeout: float, observer: ExchangeObserver | None = None
    ) -> None:
        self._grid = grid
        self._timeout = timeout
        self._observer = observer

    def set_run(self, run: object) -> None:  # noqa: D102 - delegation
        self._grid.set_run(run)  # type: ignore[arg-type]

    @property
    def run(self):  # type: ignore[no-untyped-def]  # noqa: D102 - delegation
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]  # noqa: D102
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102 - delegation
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send and collect replies for at most the deadline (or ``timeout`` if shorter)."""
        limit = self._timeout if timeout is None else min(timeout, self._timeout)
        messages = list(messages)
        started = time.monotonic()
        pending = {message_id for message_id in self._grid.push_messages(messages) if message_id}
        deadline = started + limit
        replies: list[Message] = []
        wait = FIRST_POLL_SECONDS
        while pending:
            received = list(self._grid.pull_messages(pending))
            replies.extend(received)
            pending -= {reply.metadata.reply_to_message_id for reply in received}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(wait)
            wait = min(wait * 1.5, REPLY_POLL_SECONDS)
        if self._observer is not None and messages:
            self._observer(_exchange(messages, time.monotonic() - started, replies))
        return replies


def _exchange(messages: list[Message], seconds: float, replies: list[Message]) -> Exchange:
    first = messages[0]
    group = first.metadata.group_id
    # An error reply made by the SuperLink (a reply whose upload never completed) names the
    # aggregator as its sender; the message it answers names the hospital.
    hospital_of = {sent.metadata.message_id: sent.metadata.dst_node_id for sent in messages}
    errors = tuple(
        (
            hospital_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id),
            reply.error.reason or f"error code {reply.error.code}",
        )
        for reply in replies
        if reply.has_error()
    )
    return Exchange(
        flower_round=int(group) if group.isdigit() else 0,
        stage=exchange_stage(first),
        seconds=seconds,
        errors=errors,
    )


def secagg_fit_workflow(
    settings: SecureAggregationSettings, timeout: float, hospitals: int
) -> SecAggPlusWorkflow:
    """Build Flower's SecAgg+ fit workflow from fedcare's settings for ``hospitals``."""
    return SecAggPlusWorkflow(
        num_shares=settings.share_fraction(hospitals),
        reconstruction_threshold=settings.reconstruction_threshold,
        clipping_range=settings.clipping_range,
        max_weight=settings.max_weight,
        timeout=timeout,
    )


def run_rounds(
    grid: Grid,
    context: Context,
    strategy: Strategy,
    *,
    rounds: int,
    federation: FederationSettings,
    secure_aggregation: SecureAggregationSettings,
    hospitals: int,
    observer: ExchangeObserver | None = None,
) -> None:
    """Run every round of ``strategy``, with SecAgg+ when it is enabled.

    Parameters
    ----------
    grid : Grid
        Flower's grid.
    context : Context
        The ServerApp's context.
    strategy : Strategy
        A legacy strategy (:class:`server.strategy.FedCareStrategy`).
    rounds : int
        Rounds to run now (fewer than the run's when it resumes).
    federation : FederationSettings
        The per-exchange deadline.
    secure_aggregation : SecureAggregationSettings
        Whether, and how, to mask updates.
    hospitals : int
        Hospitals expected each round (sizes the SecAgg+ neighbourhoods).
    observer : ExchangeObserver | None
        Told about every exchange (its stage, time and error replies).
    """
    timeout = federation.round_timeout
    legacy_context = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
        strategy=strategy,
    )
    fit_workflow = (
        secagg_fit_workflow(secure_aggregation, timeout, hospitals)
        if secure_aggregation.enabled
        else None
    )
    DefaultWorkflow(fit_workflow=fit_workflow)(
        DeadlineGrid(grid, timeout, observer), legacy_context
    )
