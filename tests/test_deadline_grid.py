"""The deadline grid reports every error reply under the hospital it was meant for."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, Metadata, RecordDict
from flwr.app.error import Error
from flwr.app.message import make_message

from fedcare.server.secure_aggregation import DeadlineGrid, Exchange

AGGREGATOR_NODE = 1


def _metadata(message_id: str, src: int, dst: int, reply_to: str = "") -> Metadata:
    return Metadata(
        run_id=7,
        message_id=message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=reply_to,
        group_id="2",
        created_at=0.0,
        ttl=60.0,
        message_type="train",
    )


class _Grid:
    """Answers each pushed message with an error, as the SuperLink or the hospital would."""

    def __init__(self, sender_of_error: dict[int, int]) -> None:
        self._sender_of_error = sender_of_error
        self._pushed: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        self._pushed = list(messages)
        return [message.metadata.message_id for message in self._pushed]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [
            make_message(
                metadata=_metadata(
                    "",
                    self._sender_of_error[message.metadata.dst_node_id],
                    AGGREGATOR_NODE,
                    reply_to=message.metadata.message_id,
                ),
                error=Error(code=0, reason=f"failed at {message.metadata.dst_node_id}"),
            )
            for message in self._pushed
            if message.metadata.message_id in set(message_ids)
        ]


def test_an_error_the_superlink_made_is_reported_under_the_hospital_it_answers() -> None:
    exchanges: list[Exchange] = []
    # Node 11 answered with its own error; node 12's upload never completed, and the
    # SuperLink's error reply names the aggregator as its sender.
    fake = _Grid({11: 11, 12: AGGREGATOR_NODE})
    grid = DeadlineGrid(fake, timeout=5.0, observer=exchanges.append)  # type: ignore[arg-type]
    sent = [
        make_message(metadata=_metadata(f"m{node}", AGGREGATOR_NODE, node), content=RecordDict())
        for node in (11, 12)
    ]
    assert len(list(grid.send_and_receive(sent))) == 2
    (exchange,) = exchanges
    assert exchange.flower_round == 2 and exchange.stage == "train"
    assert sorted(exchange.errors) == [(11, "failed at 11"), (12, "failed at 12")]
