"""One instruction handled at a hospital: its data, its records, its audit trail.

Every instruction received, every release and every refusal is appended to the
hospital's hash-chained audit log; every release, a DP-SGD update or noisy
evaluation statistics, is recorded in its privacy ledger before it is handed
over (:func:`client.hospital.train_round`, :func:`client.evaluation_round.evaluate_round`).
Both live in the hospital's state folder and never leave it. The hospital's
policy is checked before its data is even read, for training and evaluation alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

import numpy as np

from fedcare.client.evaluation_round import EvaluationRelease
from fedcare.client.hospital import RoundUpdate, parse_instruction, train_round
from fedcare.client.ledger import PrivacyLedger, ledger_path
from fedcare.client.personalisation import evaluate_and_personalise
from fedcare.client.policy import check_policy
from fedcare.client.site import Site, SiteSource, site_limits, site_records
from fedcare.client.state_files import AUDIT_FILE
from fedcare.client.warm_cache import RUN_CACHE
from fedcare.shared.audit import AuditEvent, AuditLog, JsonValue, canonical_json
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import FedcareError
from fedcare.shared.keys import InstructionKey, ReplyKey
from fedcare.shared.privacy import DpSgdPlan
from fedcare.shared.private_files import private_directory, restrict_file


class _Release(Protocol):
    """What a hospital releases in one answer: its reply's scalars and its ledger entry."""

    @property
    def metrics(self) -> Mapping[str, object]: ...

    @property
    def reservations(self) -> tuple[int, ...]: ...


_R = TypeVar("_R", bound=_Release)
_R_co = TypeVar("_R_co", bound=_Release, covariant=True)


class _Compute(Protocol[_R_co]):
    """A round's computation: :func:`client.hospital.train_round` or its evaluation twin."""

    def __call__(  # noqa: PLR0913 - as the round functions take them
        self,
        global_weights: Sequence[np.ndarray],
        config: RunConfig,
        site: Site,
        *,
        plan: DpSgdPlan | None,
        ledger: PrivacyLedger,
        run_id: str,
        server_round: int,
    ) -> _R_co: ...


def arrays_fingerprint(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes: what was released, without the values."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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
    source : SiteSource | None
        Where a virtual hospital's data comes from (a simulation's); ``None``
        for a real hospital.
    """

    def __init__(
        self,
        node_config: Mapping[str, object],
        instruction: Mapping[str, FlatValue],
        run_id: str,
        source: SiteSource | None = None,
    ) -> None:
        self.config = parse_instruction(instruction)
        self.server_round = int(instruction.get(InstructionKey.SERVER_ROUND, 0))
        self.run_id = self.config.privacy.ledger_run or run_id
        self._node_config = node_config
        self._source = source
        name, self.state = site_records(node_config, self.config, source)
        self.name = name
        # Owner-only: the ledger and audit log describe what this hospital released.
        private_directory(self.state)
        self.audit = AuditLog(restrict_file(self.state / AUDIT_FILE), actor=name)
        self._instruction_sha256 = hashlib.sha256(
            canonical_json(dict(self.config.to_flat())).encode()
        ).hexdigest()

    def train(self, parameters: list[np.ndarray], plan: DpSgdPlan | None) -> RoundUpdate:
        """Train one round and return the update to release (ledger and audit written first)."""
        return self._release(
            "train",
            train_round,
            parameters,
            plan,
            lambda update: {
                "kind": "model-update",
                "payload_sha256": arrays_fingerprint(update.delta),
                "rows": update.num_examples,
            },
        )

    def evaluate(self, parameters: list[np.ndarray], plan: DpSgdPlan | None) -> EvaluationRelease:
        """Score the global model locally; release noisy statistics (ledger and audit first).

        After the run's last round, a run that personalises also fine-tunes and
        scores the model here (:func:`client.personalisation.evaluate_and_personalise`);
        a refused fine-tuning is audited with its reason.
        """
        return self._release(
            "evaluate",
            evaluate_and_personalise,
            parameters,
            plan,
            lambda release: {
                "kind": "metrics",
                "metrics": sorted(release.metrics),
                **_refusal(release.personalisation_refused),
            },
        )

    def _release(  # noqa: PLR0913 - what is released, from what, and how the audit names it
        self,
        kind: str,
        compute: _Compute[_R],
        parameters: list[np.ndarray],
        plan: DpSgdPlan | None,
        describe: Callable[[_R], dict[str, JsonValue]],
    ) -> _R:
        """Check the policy, compute a release from the site's data, book and audit it."""
        self._received(kind)
        with self._refusals_audited():
            self._check_policy()
            site = RUN_CACHE.site(self._node_config, self.config, self.run_id, self._source)
            with PrivacyLedger(ledger_path(site.state)) as ledger:
                release = compute(
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
                    **describe(release),
                    epsilon=_number(release.metrics.get(ReplyKey.EPSILON)),
                    dataset_epsilon=_number(release.metrics.get(ReplyKey.DATASET_EPSILON)),
                )
                for reservation in release.reservations:
                    # Handed to Flower from here; the entry already counted as spent.
                    ledger.confirm(reservation)
        return release

    def _check_policy(self) -> None:
        """Apply the hospital's own limits before its data is read or anything computed."""
        limits = site_limits(self._node_config)
        if limits is not None:
            check_policy(self.config, limits, site=self.name)

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


def _refusal(reason: str) -> dict[str, JsonValue]:
    return {"personalisation_refused": reason} if reason else {}
