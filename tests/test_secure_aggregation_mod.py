"""A hospital never answers a plaintext training request when the run promised SecAgg+."""

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from fedcare.client.secure_aggregation import PLAINTEXT_REFUSED, secure_aggregation_mod
from fedcare.shared.config.run_config import RunConfig

pytestmark = pytest.mark.usefixtures("task_identity")


def _train_message(config: RunConfig) -> Message:
    fit_ins = FitIns(ndarrays_to_parameters([np.zeros(2)]), dict(config.to_flat()))
    return Message(
        content=compat.fitins_to_recorddict(fit_ins, keep_input=True),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def _handler(calls: list[Message]):  # type: ignore[no-untyped-def]
    def call_next(msg: Message, ctxt: Context) -> Message:
        calls.append(msg)
        return Message(RecordDict(), reply_to=msg)

    return call_next


def test_plaintext_request_in_a_secagg_run_is_refused_without_training() -> None:
    calls: list[Message] = []
    reply = secure_aggregation_mod(_train_message(RunConfig()), _context(), _handler(calls))
    assert reply.has_error() and reply.error.code == PLAINTEXT_REFUSED
    assert "refusing to send a plaintext update" in reply.error.reason
    assert calls == []


def test_plaintext_request_passes_when_secagg_was_turned_off_explicitly() -> None:
    calls: list[Message] = []
    config = RunConfig.from_flat({"secure-aggregation": False})
    reply = secure_aggregation_mod(_train_message(config), _context(), _handler(calls))
    assert not reply.has_error() and len(calls) == 1
