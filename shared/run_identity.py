"""A run's configuration hash: the one name aggregator and hospitals both give a run.

``fedcare run`` prints it before the run starts, so the operator can send it to
the hospitals; a hospital that requires approval lists the hashes it approved
(``fedcare hospital approve HASH``) and computes the same hash from every
instruction it receives. A resumed run keeps its hash, because the settings a
resume changes itself (:data:`BOOKKEEPING_KEYS`) are left out, and so are the
aggregator's own paths.
"""

from __future__ import annotations

import hashlib
import json
import re

from fedcare.shared.config.run_config import RunConfig

BOOKKEEPING_KEYS = ("out-dir", "resume", "ledger-run")
"""Settings that name where and how the aggregator keeps the run, not what it asks of
hospitals: the run folder, the resume flag and the ledger run a resume inherits."""

_HASH = re.compile(r"^[0-9a-f]{64}$")


def run_config_hash(config: RunConfig) -> str:
    """SHA-256 (hex) of every setting of ``config`` except :data:`BOOKKEEPING_KEYS`.

    Stable: the same settings give the same hash in every process and on every
    machine (keys sorted, values as JSON).
    """
    flat = {k: v for k, v in config.to_flat().items() if k not in BOOKKEEPING_KEYS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()


def is_run_config_hash(text: str) -> bool:
    """Whether ``text`` has the form of :func:`run_config_hash` (64 lower-case hex digits)."""
    return bool(_HASH.match(text))
