"""One instruction handled at a hospital: its data, its records, its audit trail.

Every instruction received, every release and every refusal is appended to the
hospital's hash-chained audit log; every DP-SGD release is recorded in its
privacy ledger before the update is handed over (:func:`client.hospital.train_round`).
Both live in the hospital's state folder and never leave it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fedcare.client.hospital import (
    RoundUpdate,
    evaluate_round,
    parse_instruction,
    run_history,
    train_round,
)
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.site import site_records
from fedcare.client.warm_cache import RUN_CACHE
from fedcare.shared.audit import AuditEvent, AuditLog, canonical_json
from fedcare.shared.config import FlatValue
from fedcare.shared.errors import FedcareError
from fedcare.shared.keys import InstructionKey, ReplyKey
from fedcare.shared.privacy import DpSgdPlan
from fedcare.shared.private_files import private_directory, restrict_file

LEDGER_FILE = "privacy-ledger.db"
AUDIT_FILE = "audit.jsonl"


def arrays_fingerprint(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes: what was released, without the values."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def ledger_path(state: Path) -> Path:
    """The privacy ledger inside a hospital's state folder."""
    return state / LEDGER_FILE


class HospitalSession:
    """A hospital handling one instruction from the aggregator.

    Parameters
    ----------
    node_config : Mapping[str, object]
        Flower's node config (the hospital's own settings).
    instruction : Mapping[str, FlatValue]
        The run config and round number the aggregator sent.
    run_id : str
        Flower's run id. Privacy spending is booked under the run's
        ``ledger-run`` when the aggregator set one (a resumed run keeps its
        original run's budget), else under this id.
    """

    def __init__(
        self, node_config: Mapping[str, object], instruction: Mapping[str, FlatValue], run_id: str
    ) -> None:
        self.config = parse_instruction(instruction)
        self.server_round = int(instruction.get(InstructionKey.SERVER_ROUND, 0))
        self.run_id = self.config.privacy.ledger_run or run_id
        self._node_config = node_config
        name, self.state = site_records(node_config, self.config)
        # Owner-only: the ledger and audit log describe what this hospital released.
        private_directory(self.state)
        self.audit = AuditLog(restrict_file(self.state / AUDIT_FILE), actor=name)
        self._instruction_sha256 = hashlib.sha256(
            canonical_json(dict(self.config.to_flat())).encode()
        ).hexdigest()

    def train(self, parameters: list[np.ndarray], plan: DpSgdPlan | None) -> RoundUpdate:
        """Train one round and return the update to release (ledger and audit written first)."""
        self._received("train")
        with self._refusals_audited():
            site = RUN_CACHE.site(self._node_config, self.config, self.run_id)
            with PrivacyLedger(ledger_path(site.state)) as ledger:
                update = train_round(
                    parameters,
                    self.config,
                    site,
                    plan=plan,
                    ledger=ledger,
                    run_id=self.run_id,
                    server_round=self.server_round,
                )
                self.audit.append(
                    AuditEvent.UPDATE_RELEASED,
                    run=self.run_id,
                    round=self.server_round,
                    kind="model-update",
                    payload_sha256=arrays_fingerprint(update.delta),
                    rows=update.num_examples,
                    epsilon=_number(update.metrics.get(ReplyKey.EPSILON)),
                    dataset_epsilon=_number(update.metrics.get(ReplyKey.DATASET_EPSILON)),
                )
                if update.reservation is not None:
                    # Handed to Flower from here; the entry already counted as spent.
                    ledger.confirm(update.reservation)
        return update

    def evaluate(
        self, parameters: list[np.ndarray]
    ) -> tuple[float, int, dict[str, bool | int | float | str]]:
        """Score the global model locally; only aggregate metrics are returned."""
        self._received("evaluate")
        with self._refusals_audited():
            site = RUN_CACHE.site(self._node_config, self.config, self.run_id)
            with PrivacyLedger(ledger_path(site.state)) as ledger:
                history = run_history(ledger, site, self.run_id)
            loss, rows, metrics = evaluate_round(
                parameters, self.config, site, history, run_id=self.run_id
            )
        self.audit.append(
            AuditEvent.UPDATE_RELEASED,
            run=self.run_id,
            round=self.server_round,
            kind="metrics",
            rows=rows,
            metrics=sorted(metrics),
        )
        return loss, rows, metrics

    def _received(self, kind: str) -> None:
        self.audit.append(
            AuditEvent.INSTRUCTION_RECEIVED,
            run=self.run_id,
            round=self.server_round,
            kind=kind,
            config_sha256=self._instruction_sha256,
        )

    @contextmanager
    def _refusals_audited(self) -> Iterator[None]:
        try:
            yield
        except FedcareError as error:
            self.audit.append(
                AuditEvent.ROUND_REFUSED,
                run=self.run_id,
                round=self.server_round,
                error=type(error).__name__,
                reason=str(error),
            )
            raise


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
