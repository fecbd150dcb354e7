"""The hospital's side of SecAgg+, and its refusal to send a plaintext update when SecAgg+ is promised.

Notes
-----
Flower's ``secaggplus_mod`` must be the outermost mod: it masks what the handler
returns. It fails on a training message that carries no SecAgg+ stage, so a run
with secure aggregation turned off (explicitly) passes through it untouched;
any other plaintext training request is answered with an error, never with an update.
"""

from __future__ import annotations

from flwr.app import Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedcare.shared.config import SecureAggregationSettings, setting_key
from fedcare.shared.keys import NodeConfigKey

PLAINTEXT_REFUSED = 1001
"""Error code of a refused plaintext training request."""

_SECAGG_KEY = setting_key(SecureAggregationSettings, "enabled")


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Run SecAgg+ on training messages that carry it; refuse plaintext ones that should."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    instruction = compat.recorddict_to_fitins(msg.content, keep_input=True).config
    if instruction.get(_SECAGG_KEY, SecureAggregationSettings().enabled) is not False:
        reason = (
            "refusing to send a plaintext update: this run has secure aggregation on, "
            "but the request carried no SecAgg+ stage"
        )
        return Message(Error(code=PLAINTEXT_REFUSED, reason=reason), reply_to=msg)
    if ctxt.node_config.get(NodeConfigKey.REQUIRE_SECURE_AGGREGATION) is True:
        reason = "refusing to send a plaintext update: this hospital requires secure aggregation"
        return Message(Error(code=PLAINTEXT_REFUSED, reason=reason), reply_to=msg)
    return call_next(msg, ctxt)
