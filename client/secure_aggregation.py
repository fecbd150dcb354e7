"""The hospital's side of SecAgg+: its floor under the protocol, and its refusal of plaintext.

Notes
-----
Flower's ``secaggplus_mod`` must be the outermost mod: it masks what the handler
returns. Before any SecAgg+ stage reaches it, the hospital checks what the
aggregator sent against its floor (:mod:`client.secure_aggregation_floor`):
enough hospitals, a safe threshold, sane unmasking lists. Below the floor it
answers with an error that says why, and writes the refusal to its audit log
(a simulated hospital, which has no state folder before its first instruction,
logs it). A training message that carries no SecAgg+ stage passes only when the
run turned secure aggregation off explicitly and the hospital does not require
it; any other plaintext training request is answered with an error, never with
an update.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat

from fedcare.client.secure_aggregation_floor import (
    COLLECT,
    SETUP,
    SHARE_KEYS,
    UNMASK,
    Neighbourhood,
    collect_problem,
    setup_problem,
    share_keys_problem,
    stage_of,
    unmask_problem,
)
from fedcare.client.site_settings import SitePrivacy
from fedcare.client.state_files import AUDIT_FILE
from fedcare.shared.audit import AuditEvent, AuditLog
from fedcare.shared.config.flat import setting_key
from fedcare.shared.config.secagg import SecureAggregationSettings
from fedcare.shared.keys import NodeConfigKey, StateKey

logger = logging.getLogger(__name__)

PLAINTEXT_REFUSED = 1001
"""Error code of a refused plaintext training request."""
SECAGG_REFUSED = 1004
"""Error code of a SecAgg+ stage below the hospital's floor."""

_SECAGG_KEY = setting_key(SecureAggregationSettings, "enabled")
_SHARES, _THRESHOLD, _MEMBERS = "shares", "threshold", StateKey.NEIGHBOURS.value


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Run SecAgg+ on training messages that carry it and pass the floor; refuse the rest."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        problem = check_stage(msg, ctxt)
        if problem is not None:
            return _refuse(msg, ctxt, SECAGG_REFUSED, f"refusing SecAgg+: {problem}")
        return secaggplus_mod(msg, ctxt, call_next)
    instruction = compat.recorddict_to_fitins(msg.content, keep_input=True).config
    if instruction.get(_SECAGG_KEY, SecureAggregationSettings().enabled) is not False:
        reason = (
            "refusing to send a plaintext update: this run has secure aggregation on, "
            "but the request carried no SecAgg+ stage"
        )
        return _refuse(msg, ctxt, PLAINTEXT_REFUSED, reason)
    if ctxt.node_config.get(NodeConfigKey.REQUIRE_SECURE_AGGREGATION) is True:
        reason = "refusing to send a plaintext update: this hospital requires secure aggregation"
        return _refuse(msg, ctxt, PLAINTEXT_REFUSED, reason)
    return call_next(msg, ctxt)


def check_stage(msg: Message, ctxt: Context) -> str | None:
    """Check one SecAgg+ stage against the floor; remember what setup and key sharing agreed."""
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    node_id, floor = msg.metadata.dst_node_id, min_participants(ctxt)
    stage = stage_of(configs)
    if stage == SETUP:
        problem = setup_problem(configs, min_participants=floor)
        if problem is None:
            shares, threshold = configs[Key.SHARE_NUMBER], configs[Key.THRESHOLD]
            ctxt.state.config_records[StateKey.SECAGG_FLOOR] = ConfigRecord(
                {_SHARES: shares, _THRESHOLD: threshold, _MEMBERS: []}
            )
        return problem
    accepted = _accepted(ctxt)
    if accepted is None:
        return "this hospital accepted no SecAgg+ setup for this round"
    if stage == SHARE_KEYS:
        problem, members = share_keys_problem(
            configs, node_id=node_id, accepted=accepted, min_participants=floor
        )
        if problem is None:
            ctxt.state.config_records[StateKey.SECAGG_FLOOR][_MEMBERS] = list(members)
        return problem
    checks = {COLLECT: collect_problem, UNMASK: unmask_problem}
    if stage not in checks:
        return f"unknown SecAgg+ stage {stage!r}"
    return checks[stage](configs, node_id=node_id, accepted=accepted, min_participants=floor)


def min_participants(ctxt: Context) -> int:
    """Return the hospital's ``min-participants`` (the default for a simulated hospital)."""
    value = ctxt.node_config.get(NodeConfigKey.MIN_PARTICIPANTS, SitePrivacy.min_participants)
    return int(str(value))


def _accepted(ctxt: Context) -> Neighbourhood | None:
    record = ctxt.state.config_records.get(StateKey.SECAGG_FLOOR)
    if record is None:
        return None
    members = tuple(int(str(member)) for member in record[_MEMBERS])  # type: ignore[union-attr]
    return Neighbourhood(
        shares=int(str(record[_SHARES])), threshold=int(str(record[_THRESHOLD])), members=members
    )


def _refuse(msg: Message, ctxt: Context, code: int, reason: str) -> Message:
    """Answer with an error (never an update), and keep the refusal in the audit log."""
    logger.warning("%s", reason)
    # A refused round starts over at setup: forget what the aborted one agreed.
    ctxt.state.config_records.pop(StateKey.SECAGG_FLOOR, None)
    state = ctxt.node_config.get(NodeConfigKey.STATE_DIR)
    name = ctxt.node_config.get(NodeConfigKey.HOSPITAL_NAME)
    if isinstance(state, str) and isinstance(name, str):
        AuditLog(Path(state) / AUDIT_FILE, actor=name).append(
            AuditEvent.ROUND_REFUSED,
            run=str(ctxt.run_id),
            round=_round(msg),
            error="SecureAggregationRefused",
            reason=reason,
        )
    return Message(Error(code=code, reason=reason), reply_to=msg)


def _round(msg: Message) -> int:
    group = msg.metadata.group_id
    return int(group) if group.isdigit() else 0
