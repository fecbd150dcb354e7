"""Every file and folder in a hospital's state folder, named once.

The state folder (``[hospital] state`` in ``site.toml``) holds what the hospital
records about itself; nothing in it ever leaves the hospital, and everything in
it is owner-only (:mod:`shared.private_files`, :func:`client.supernode.prepare_state`).
"""

from __future__ import annotations

LEDGER_FILE = "privacy-ledger.db"
"""The privacy ledger (SQLite, :mod:`client.ledger`): every release, booked before it leaves."""

AUDIT_FILE = "audit.jsonl"
"""The hash-chained audit log (:mod:`shared.audit`): every instruction, release and refusal."""

NODE_CONFIG_FILE = "node-config.toml"
"""The node config Flower hands the ClientApp: the hospital's own settings, flattened."""

RUNTIME_SECRET = "runtime.secret"
"""The secret only the hospital's worker holds, to take tasks from its SuperNode."""

FLWR_HOME = "flwr-home"
"""Flower's home folder for the hospital's SuperNode."""

WORKER_PID_FILE = "worker.pid"
"""The process id of the hospital's running worker (:mod:`client.executor`)."""

INFLIGHT_FILE = "worker-task.json"
"""The message the worker has in hand, for the worker that replaces it if it dies."""

FILLS_DIR = "fill-values"
"""Each run's fill values for empty cells, DP ones booked once (:mod:`client.fill_values`)."""

LOCAL_DIR = "local-parameters"
"""Each run's site-local model parameters (:mod:`client.local_parameters`)."""

PERSONALISED_DIR = "personalised"
"""Each run's personalised model, which never leaves the site (:mod:`client.personalisation`)."""

PRIVATE_FILES = (
    LEDGER_FILE,
    f"{LEDGER_FILE}-wal",
    f"{LEDGER_FILE}-shm",
    AUDIT_FILE,
)
"""Records the worker writes: created 0600 by their writers, tightened at start if not."""
