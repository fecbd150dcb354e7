"""Whether the hospital's worker may act on a task: the run's bundle, then the run's policy.

The worker (:mod:`client.executor`) hands every task's facts to
:meth:`Admission.check` *before* the installed ClientApp sees the message. A
refusal names the run and the reason, is written to the hospital's audit log,
and goes back to the aggregator as the task's error reply; nothing is trained
and nothing from the run's bundle is ever installed or imported. The first
admitted message of a run is audited too, so ``fedcare hospital runs`` can show
what asked and what was decided.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from fedcare.client.bundle import BundleRefused, verify_bundle
from fedcare.client.policy import RunRefused, RunRequest, check_run
from fedcare.client.site_settings import SiteSettings
from fedcare.client.state_files import AUDIT_FILE
from fedcare.shared.audit import AuditEvent, AuditLog, read_audit_log
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import FedcareError
from fedcare.shared.keys import InstructionKey
from fedcare.shared.private_files import private_directory, restrict_file
from fedcare.shared.run_identity import run_config_hash

logger = logging.getLogger(__name__)

KEY_EXCHANGE_STAGES = frozenset({"setup", "share_keys", "unmask"})
"""SecAgg+'s protocol-only stages: keys and key shares, no data. A hospital outside a
run's policy still answers them and refuses at the first message that would use its
data (training or evaluation): Flower 1.41's SecAgg+ cannot finish a round for the
others when a hospital leaves before it has shared its keys (at unmask, the missing
shares of a hospital that left at setup halt the round), while a hospital that
leaves after sharing them is a dropout the protocol recovers from. The bundle is
checked at every stage."""


class TaskRefused(FedcareError):
    """The hospital will not act on this task; the message says which run and why.

    Parameters
    ----------
    reason : str
        The sentence sent back to the aggregator.
    bundle : bool
        Whether the run's bundle itself was refused (else the run's settings).
    """

    def __init__(self, reason: str, *, bundle: bool) -> None:
        self.bundle = bundle
        super().__init__(reason)


@dataclass(frozen=True)
class TaskFacts:
    """What a task brings, as read from Flower (bytes and plain values only).

    Attributes
    ----------
    run_id : int
        Flower's run id.
    client_app : bool
        Whether the task is a ClientApp task (an AgentApp task is always refused).
    bundle : bytes
        The run's app bundle (FAB) as received.
    bundle_hash, run_bundle_hash : str
        The hash sent with the bundle, and the one the run was created with.
    run_config : Mapping[str, FlatValue]
        Flower's run config (the bundle's config with the operator's overrides).
    instruction : Mapping[str, FlatValue] | None
        The configuration a training or evaluation request carries (``None`` for
        SecAgg+ protocol stages, which carry none).
    evaluation : bool
        Whether the message asks for an evaluation.
    stage : str
        What the message asks for, for the audit log (``train``, a SecAgg+ stage, ...).
    """

    run_id: int
    client_app: bool
    bundle: bytes
    bundle_hash: str
    run_bundle_hash: str
    run_config: Mapping[str, FlatValue]
    instruction: Mapping[str, FlatValue] | None
    evaluation: bool
    stage: str


@dataclass
class _RunState:
    name: str
    evaluations: int
    admitted: set[str] = field(default_factory=set)


class Admission:
    """The worker's gate: it checks every task against the bundle rules and the site's policy.

    Parameters
    ----------
    site_toml : Path
        The hospital's ``site.toml``; read again whenever it changes (approvals).
    """

    def __init__(self, site_toml: Path) -> None:
        self._source = site_toml
        self._stamp: tuple[int, int, int] | None = None
        self._settings = self._reload()
        self._run: _RunState | None = None

    @property
    def settings(self) -> SiteSettings:
        """The hospital's settings as last read."""
        return self._settings

    def check(self, facts: TaskFacts) -> str:
        """Admit the task or raise :class:`TaskRefused` (audited either way); return the run name.

        Raises
        ------
        TaskRefused
            Naming the run and the reason.
        """
        try:
            self._settings = self._reload()
        except FedcareError as error:
            # The details (with paths) stay in the hospital's log, not in the reply.
            logger.error("site settings unusable, refusing every task: %s", error)
            error = RunRefused(f"{self._settings.node.name} refuses: its site settings are invalid")
            self._refuse(facts, error)
        try:
            decided = self._decide(facts)
        except FedcareError as error:
            self._refuse(facts, error)
        if decided is None:
            return _identify(facts)[0]
        config, config_hash = decided
        run = self._state(config, facts.run_id)
        if config_hash not in run.admitted:
            run.admitted.add(config_hash)
            self._audit(
                AuditEvent.RUN_ADMITTED,
                run=run.name,
                config_sha256=config_hash,
                model=config.training.model,
                rounds=config.federation.rounds,
                epsilon=config.privacy.target_epsilon,
            )
        return run.name

    def _refuse(self, facts: TaskFacts, error: FedcareError) -> NoReturn:
        refusal = TaskRefused(f"run {facts.run_id}: {error}", bundle=_is_bundle(error))
        name, config_hash = _identify(facts)
        self._audit(
            AuditEvent.RUN_REFUSED,
            run=name,
            config_sha256=config_hash,
            stage=facts.stage,
            reason=str(refusal),
            bundle=refusal.bundle,
        )
        raise refusal from None

    def answered(self, facts: TaskFacts) -> None:
        """Count an evaluation request the hospital answered (for ``max-evaluations``)."""
        if facts.evaluation and self._run is not None:
            self._run.evaluations += 1

    def _decide(self, facts: TaskFacts) -> tuple[RunConfig, str] | None:
        if not facts.client_app:
            raise BundleRefused(
                "the run is an AgentApp run; hospitals run only fedcare's ClientApp"
            )
        verify_bundle(facts.bundle, declared_hash=facts.bundle_hash, run_hash=facts.run_bundle_hash)
        config = RunConfig.from_flat(facts.run_config)
        if facts.stage in KEY_EXCHANGE_STAGES:
            return None
        config_hash = run_config_hash(config)
        if facts.instruction is not None:
            asked = {k: v for k, v in facts.instruction.items() if k != InstructionKey.SERVER_ROUND}
            if run_config_hash(RunConfig.from_flat(asked)) != config_hash:
                raise TaskRefused(
                    "the request's settings differ from the run's configuration", bundle=False
                )
        settings = self._settings
        done = self._state(config, facts.run_id).evaluations
        request = RunRequest(config, config_hash, facts.evaluation, evaluations_done=done)
        check_run(request, settings.policy, settings.node.privacy, site=settings.node.name)
        return config, config_hash

    def _state(self, config: RunConfig, run_id: int) -> _RunState:
        name = config.privacy.ledger_run or str(run_id)
        if self._run is None or self._run.name != name:
            self._run = _RunState(name=name, evaluations=self._evaluations_answered(name))
        return self._run

    def _evaluations_answered(self, run: str) -> int:
        log = self._settings.node.state / AUDIT_FILE
        if not log.exists():
            return 0
        return sum(
            1
            for entry in read_audit_log(log)
            if entry.event == AuditEvent.UPDATE_RELEASED
            and entry.fields.get("run") == run
            and entry.fields.get("kind") == "metrics"
        )

    def _reload(self) -> SiteSettings:
        info = self._source.stat()
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            settings = SiteSettings.load(self._source)
            self._stamp = stamp
            return settings
        return self._settings

    def _audit(self, event: AuditEvent, **fields: str | int | float | bool | None) -> None:
        state = private_directory(self._settings.node.state)
        log = AuditLog(restrict_file(state / AUDIT_FILE), actor=self._settings.node.name)
        log.append(event, **fields)


def _identify(facts: TaskFacts) -> tuple[str, str | None]:
    """Name the run and give its configuration hash, as far as its configuration can be read."""
    try:
        config = RunConfig.from_flat(facts.run_config)
    except FedcareError:
        return str(facts.run_id), None
    return config.privacy.ledger_run or str(facts.run_id), run_config_hash(config)


@dataclass
class RunDecision:
    """What the audit log says a run asked and what the hospital decided.

    Attributes
    ----------
    run : str
        The run's name (Flower's run id; a resumed run keeps its first run's).
    first_seen : str
        When its first message was checked (UTC).
    config_hash : str | None
        Its configuration hash, when it could be read.
    admitted : bool
        Whether any of its messages was admitted.
    refusals : int
        Messages refused.
    last_reason : str
        The latest refusal's reason (empty if none).
    """

    run: str
    first_seen: str
    config_hash: str | None = None
    admitted: bool = False
    refusals: int = 0
    last_reason: str = ""


def run_decisions(audit_log: Path) -> list[RunDecision]:
    """Every run the hospital's worker checked, from its audit log, oldest first."""
    decisions: dict[str, RunDecision] = {}
    for entry in read_audit_log(audit_log):
        if entry.event not in (AuditEvent.RUN_ADMITTED, AuditEvent.RUN_REFUSED):
            continue
        run = str(entry.fields.get("run"))
        decision = decisions.setdefault(run, RunDecision(run=run, first_seen=entry.time))
        config_hash = entry.fields.get("config_sha256")
        if isinstance(config_hash, str):
            decision.config_hash = config_hash
        if entry.event == AuditEvent.RUN_ADMITTED:
            decision.admitted = True
        else:
            decision.refusals += 1
            decision.last_reason = str(entry.fields.get("reason", ""))
    return list(decisions.values())


def _is_bundle(error: FedcareError) -> bool:
    return isinstance(error, BundleRefused) or (isinstance(error, TaskRefused) and error.bundle)
