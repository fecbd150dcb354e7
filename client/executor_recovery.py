"""The message a worker had in hand when it died, answered by the worker that replaces it.

While the worker handles a message it keeps, in an owner-only file of the state
folder, the task's token and the message's header (never its content). If the
worker is killed, its replacement finds the file and answers that message with an
error reply at once, so the aggregator hears within seconds instead of after
Flower's one-minute task expiry. Once the worker has started to push its reply,
the file says so, and the replacement leaves the message to Flower (which sends an
error reply only if no reply was stored): a message is never answered twice. The
privacy ledger is untouched: an update reserved before the crash stays counted as
spent (write-ahead), whether or not it was sent.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
from flwr.app import Context, Error, Message, RecordDict
from flwr.app.message.message import remove_content_from_message
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedcare.client.state_files import INFLIGHT_FILE
from fedcare.shared.private_files import write_private

logger = logging.getLogger("fedcare.worker")

RESTARTED = (
    "the hospital's worker stopped while handling this message and was restarted; "
    "nothing was sent for it"
)


class InFlightTask:
    """The owner-only record of the message a worker is handling.

    Parameters
    ----------
    state : Path
        The hospital's state folder.
    """

    def __init__(self, state: Path) -> None:
        self.path = state / INFLIGHT_FILE

    def begin(self, token: str, message: Message) -> None:
        """Record that ``message`` (claimed with ``token``) is being handled."""
        self._write(token, remove_content_from_message(message), replying=False)

    def replying(self) -> None:
        """Record that the reply is being pushed (from here on, Flower answers a crash)."""
        if self.path.exists():
            record = json.loads(self.path.read_text(encoding="utf-8"))
            record["replying"] = True
            write_private(self.path, json.dumps(record).encode())

    def end(self) -> None:
        """Forget the message: it was answered."""
        self.path.unlink(missing_ok=True)

    def recover(self, connect: Callable[[str], RuntimeHttpClient]) -> None:
        """Answer the message a dead worker left unanswered, if any, and forget it."""
        if not self.path.exists():
            return
        record = json.loads(self.path.read_text(encoding="utf-8"))
        self.end()
        if record.get("replying"):
            return
        proto = ProtoMessage.FromString(base64.b64decode(record["message"]))
        message = message_from_proto(proto)
        message.metadata.__dict__["_message_id"] = record["message_id"]
        client = connect(str(record["token"]))
        try:
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_CRASHED, reason=RESTARTED), reply_to=message
            )
            push_message(client, reply, _context_of(message))
            push_task_output(client, None, SubStatus.FAILED, RESTARTED)
            logger.warning("answered the message a stopped worker left: %s", RESTARTED)
        except httpx.HTTPError as error:
            logger.warning("the stopped worker's task is gone (%s); Flower answers it", error)
        finally:
            client.close()

    def _write(self, token: str, header: Message, *, replying: bool) -> None:
        record = {
            "token": token,
            "message_id": header.metadata.message_id,
            "message": base64.b64encode(message_to_proto(header).SerializeToString()).decode(),
            "replying": replying,
        }
        write_private(self.path, json.dumps(record).encode())


def _context_of(message: Message) -> Context:
    """Build the context :func:`push_message` needs: only its run and node ids are read."""
    return Context(
        run_id=message.metadata.run_id,
        node_id=message.metadata.dst_node_id,
        node_config={},
        state=RecordDict(),
        run_config={},
    )
