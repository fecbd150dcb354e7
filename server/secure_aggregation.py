"""The one place that drives Flower's legacy workflow, SecAgg+ included.

Flower 1.41 runs SecAgg+ only through ``LegacyContext`` + ``DefaultWorkflow`` +
``SecAggPlusWorkflow``; this module hides that, and adds the deadline Flower's
default legacy workflows lack (their ``send_and_receive`` waits forever).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedcare.shared.config import FederationSettings, SecureAggregationSettings

REPLY_POLL_SECONDS = 0.2
"""How often the aggregator asks for replies. Flower's HTTP grid waits 3 s between
pulls; SecAgg+ makes four exchanges per round, so a tighter poll saves seconds on
every round for the cost of a few small requests to the local SuperLink."""

ErrorListener = Callable[[int, str], None]
"""Told ``(node id, reason)`` of every error a hospital answers a training message with."""


class DeadlineGrid(Grid):
    """A :class:`Grid` whose ``send_and_receive`` has a deadline and a short reply poll.

    Parameters
    ----------
    grid : Grid
        The grid Flower handed the ServerApp.
    timeout : float
        Seconds any one exchange may take; replies arriving later are not collected.
    on_error : ErrorListener | None
        Told of every error reply to a training message, with its sender: when
        SecAgg+ halts, Flower hands the strategy none of them, so this is the
        only way a hospital's refusal reaches the report.
    """

    def __init__(self, grid: Grid, timeout: float, on_error: ErrorListener | None = None) -> None:
        self._grid = grid
        self._timeout = timeout
        self._on_error = on_error

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
        pending = {message_id for message_id in self._grid.push_messages(messages) if message_id}
        deadline = time.monotonic() + limit
        replies: list[Message] = []
        while pending:
            received = list(self._grid.pull_messages(pending))
            replies.extend(received)
            self._tell_errors(received)
            pending -= {reply.metadata.reply_to_message_id for reply in received}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(REPLY_POLL_SECONDS)
        return replies

    def _tell_errors(self, replies: Iterable[Message]) -> None:
        if self._on_error is None:
            return
        for reply in replies:
            if reply.has_error() and reply.metadata.message_type == MessageType.TRAIN:
                self._on_error(reply.metadata.src_node_id, reply.error.reason)


def secagg_fit_workflow(settings: SecureAggregationSettings, timeout: float) -> SecAggPlusWorkflow:
    """Build Flower's SecAgg+ fit workflow from fedcare's settings."""
    return SecAggPlusWorkflow(
        num_shares=settings.num_shares,
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
    on_error: ErrorListener | None = None,
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
    on_error : ErrorListener | None
        Told of every hospital's error reply to a training message.
    """
    timeout = federation.round_timeout
    legacy_context = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
        strategy=strategy,
    )
    fit_workflow = (
        secagg_fit_workflow(secure_aggregation, timeout) if secure_aggregation.enabled else None
    )
    DefaultWorkflow(fit_workflow=fit_workflow)(
        DeadlineGrid(grid, timeout, on_error), legacy_context
    )
