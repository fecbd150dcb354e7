"""The egress guard: the last check on everything a hospital sends out.

Only two kinds of content may leave a hospital:

* model weights (or updates) with exactly the names and shapes of the model the
  aggregator sent, or SecAgg+'s masked and protocol values;
* aggregate scalar metrics whose names are on :data:`ALLOWED_METRICS` (or are a
  noisy evaluation sum, ``noisy-sum-NNN``), computed over at least ``min-count``
  patients (default :data:`MIN_COUNT`).

Anything else is blocked: the reply is replaced by an error that names the rule
(never the content), the block is logged and written to the hospital's audit log.
Exceptions are caught here too, and what leaves of them is data-free by
construction (:func:`public_reason`): the text of a refusal about the run's
settings or the privacy budget (policy, budget, invalid update, run config),
with any path or fingerprint removed; for every other error (a data check that
names files, columns and row counts; a library echoing a cell) only its type
name. The full message stays in the hospital's own log and audit log.

Notes
-----
The guard must be the *outermost* mod, outside ``secaggplus_mod``, so that it sees
the exact reply Flower will send.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from typing import TypeGuard

from flwr.app import ArrayRecord, Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedcare.client.site_settings import SiteConfigError
from fedcare.shared.errors import (
    ConfigError,
    FedcareError,
    InvalidUpdateError,
    PrivacyBudgetExceededError,
)
from fedcare.shared.keys import (
    NOISY_SUM_KEY,
    PERSONALISED_METRICS,
    MetricName,
    NodeConfigKey,
    ReplyKey,
)

logger = logging.getLogger(__name__)

REFUSED = 1000
"""Error code of a refusal fedcare raised on purpose (its message holds no data values)."""
EGRESS_BLOCKED = 1002
"""Error code of a reply the guard stopped."""
INTERNAL_ERROR = 1003
"""Error code of an unexpected exception, reported by type only."""

MIN_COUNT = 10
"""Fewest patients an aggregate may describe before it may leave (k in k-anonymity terms)."""

ALLOWED_METRICS = frozenset(
    {*(key.value for key in ReplyKey), *(name.value for name in MetricName), *PERSONALISED_METRICS}
)
_SECAGG_KEYS = frozenset(
    value for name, value in vars(Key).items() if name.isupper() and isinstance(value, str)
)
_RESULT_PREFIXES = ("fitres.", "evaluateres.", "getparametersres.")
_STATUS_KEYS = frozenset({"code", "message"})

_TEXT_MAY_LEAVE = (PrivacyBudgetExceededError, InvalidUpdateError, ConfigError)
"""Errors whose messages speak only of the run's settings, the model or the budget."""
_TEXT_STAYS = (SiteConfigError,)
"""Subclasses of those whose messages name the hospital's own files."""
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\][^\s'\",;]+")
_DIGEST = re.compile(r"\b[0-9a-fA-F]{16,}\b")


def public_reason(error: FedcareError) -> str:
    """Return what may leave the hospital of ``error``: a data-free sentence.

    Refusals about the run's settings, the model or the privacy budget keep
    their text (minus any path or fingerprint); any other error leaves as its
    type name only, since its message may name files, columns or row counts.
    """
    name = type(error).__name__
    if isinstance(error, _TEXT_MAY_LEAVE) and not isinstance(error, _TEXT_STAYS):
        text = _DIGEST.sub("<fingerprint>", _PATH.sub("<path>", str(error)))
        return f"{name}: {text}"
    return f"{name} at the hospital; the reason stays in its own log and audit log"


def egress_guard_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Let a reply out only if it holds permitted content (see the module docstring)."""
    try:
        reply = call_next(msg, ctxt)
    except FedcareError as error:
        logger.warning("refused a %s message: %s", msg.metadata.message_type, error)
        return Message(Error(code=REFUSED, reason=public_reason(error)), reply_to=msg)
    except Exception as error:  # noqa: BLE001 - every exception must be stopped here
        logger.exception("unexpected error while handling a %s message", msg.metadata.message_type)
        reason = (
            f"{type(error).__name__} inside the hospital; "
            "the details stay in the hospital's own log"
        )
        return Message(Error(code=INTERNAL_ERROR, reason=reason), reply_to=msg)
    if reply.has_error():
        return reply
    min_count = int(str(ctxt.node_config.get(NodeConfigKey.MIN_COUNT, MIN_COUNT)))
    violations = list(inspect_reply(reply, msg, min_count=min_count))
    if not violations:
        return reply
    rules = "; ".join(sorted(set(violations)))
    logger.warning("egress guard blocked a %s reply: %s", msg.metadata.message_type, rules)
    reason = f"the hospital's egress guard blocked this reply ({rules}); nothing was sent"
    return Message(Error(code=EGRESS_BLOCKED, reason=reason), reply_to=msg)


def inspect_reply(reply: Message, request: Message, *, min_count: int) -> Iterable[str]:
    """Yield one rule name (never a value) for every piece of content that may not leave."""
    content = reply.content
    for name in content.metric_records:
        if not name.startswith(_RESULT_PREFIXES):
            yield f"unexpected record '{name}'"
    for name, record in content.metric_records.items():
        if name.endswith(".num_examples") and _too_few(record.get("num_examples", 0), min_count):
            yield f"an aggregate over fewer than {min_count} patients"
        if name.endswith(".loss") and not _finite(record.get("loss")):
            yield "a non-finite loss"
    for name, config in content.config_records.items():
        yield from _inspect_config(name, config)
    for name, arrays in content.array_records.items():
        yield from _inspect_arrays(name, arrays, request)


def _inspect_config(name: str, config: object) -> Iterable[str]:
    keys = set(config)  # type: ignore[call-overload]
    if name == RECORD_KEY_CONFIGS:
        if keys - _SECAGG_KEYS:
            yield "unexpected SecAgg+ field"
        return
    if name.endswith(".status") and name.startswith(_RESULT_PREFIXES):
        if keys - _STATUS_KEYS:
            yield "unexpected status field"
        return
    if not (name.endswith(".metrics") and name.startswith(_RESULT_PREFIXES)):
        yield f"unexpected record '{name}'"
        return
    for key, value in config.items():  # type: ignore[attr-defined]
        if key not in ALLOWED_METRICS and not NOISY_SUM_KEY.fullmatch(key):
            yield f"metric '{key}' is not on the allowed list"
        elif key == ReplyKey.HOSPITAL:
            if not isinstance(value, str):
                yield "the hospital name is not text"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            yield f"metric '{key}' is not a number"


def _inspect_arrays(name: str, arrays: ArrayRecord, request: Message) -> Iterable[str]:
    if not name.startswith(_RESULT_PREFIXES):
        yield f"unexpected record '{name}'"
        return
    if len(arrays) == 0:  # SecAgg+ clears the plain update after masking it
        return
    # Legacy (NumPyClient) arrays travel as serialised numpy; read them to check.
    decoded = [array.numpy() for array in arrays.values()]
    expected = _request_shapes(request)
    if expected is not None and [a.shape for a in decoded] != expected:
        yield "model arrays that differ from the model the aggregator sent"
    if any(a.dtype.kind != "f" for a in decoded):
        yield "model arrays of an unexpected type"


def _request_shapes(request: Message) -> list[tuple[int, ...]] | None:
    """Shapes of the model arrays the request carried (``None`` if it carried none)."""
    if request.metadata.message_type not in (MessageType.TRAIN, MessageType.EVALUATE):
        return None
    for record in request.content.array_records.values():
        return [array.numpy().shape for array in record.values()]
    return None


def _finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and math.isfinite(value)


def _too_few(count: object, min_count: int) -> bool:
    """Tell whether ``count`` is no patient count of at least ``min_count`` (a list is none)."""
    return not _finite(count) or int(count) < min_count
