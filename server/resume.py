"""Resume points: what the aggregator needs to continue a run after it stopped.

After every round the aggregator writes ``resume.json`` atomically beside the
round's checkpoint: the last complete round, its checkpoint, the run whose
privacy ledgers the hospitals book into, and fingerprints of the configuration
and of the application code. ``fedcare run --resume`` (or ``simulate --resume``)
continues from that round only if both fingerprints still match: a resumed run
must be the same experiment, run by the same code.

The model's weights live in the checkpoint (safetensors). FedAvg carries no
state between rounds besides the global model; a server optimiser (FedAdam,
FedYogi, FedAdagrad) carries its moments, checkpointed beside the model, and
its step count: ``strategy_state`` names both, and a resumed run continues
from exactly that state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.server.report import CONFIG_JSON, METRICS_JSON
from fedcare.server.run_directory import RunDirectory
from fedcare.server.run_record import RunRecord
from fedcare.server.server_optimizer import OptimizerState
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.server_optimizer import ServerOptimizerName
from fedcare.shared.errors import ConfigError
from fedcare.shared.run_identity import BOOKKEEPING_KEYS, run_config_hash
from fedcare.shared.serialization import ModelLayout, load_safetensors

RESUME_FILE = "resume.json"

_APP_PACKAGES = ("shared", "server", "client", "simulations")


@dataclass(frozen=True)
class ResumePoint:
    """Where a run can continue from.

    Attributes
    ----------
    completed_round : int
        The last round whose global model is checkpointed.
    checkpoint : str
        That model's file, relative to the run folder.
    ledger_run : str
        The run id hospitals book this run's privacy spending under.
    config_fingerprint : str
        :func:`shared.run_identity.run_config_hash` of the run's configuration.
    app_fingerprint : str
        :func:`app_fingerprint` of the code and model that ran it.
    strategy_state : dict[str, Any]
        Server optimiser state: its ``step`` and the ``moments`` file, relative
        to the run folder (empty for FedAvg).
    """

    completed_round: int
    checkpoint: str
    ledger_run: str
    config_fingerprint: str
    app_fingerprint: str
    strategy_state: dict[str, Any] = field(default_factory=dict)


def app_fingerprint(layout: ModelLayout) -> str:
    """SHA-256 of fedcare's source files and the model's parameter names and shapes."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in _APP_PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode())
            digest.update(source.read_bytes())
    digest.update(json.dumps([layout.names, layout.shapes]).encode())
    return digest.hexdigest()


def save_resume_point(run_dir: RunDirectory, point: ResumePoint) -> None:
    """Write ``point`` atomically (temp file, fsync, rename)."""
    run_dir.write_json(RESUME_FILE, asdict(point))


def load_resume_point(run_dir: RunDirectory, config: RunConfig, layout: ModelLayout) -> ResumePoint:
    """Read the run's resume point and check it belongs to this config and code.

    Raises
    ------
    ConfigError
        If the run never completed a round, or its configuration or application
        changed since; the message says what differs and what to do.
    """
    path = run_dir.path / RESUME_FILE
    if not path.is_file():
        raise ConfigError(
            "resume",
            f"{run_dir.path} has no {RESUME_FILE}: the run never completed a round. "
            "Start it afresh in a new folder.",
        )
    point = ResumePoint(**json.loads(path.read_text(encoding="utf-8")))
    if point.config_fingerprint != run_config_hash(config):
        raise ConfigError(
            "resume",
            f"the configuration differs from the one {run_dir.path} ran with "
            f"({_changed_keys(run_dir, config) or 'see config.json'}); resume with the "
            "run's own settings, or start a new run",
        )
    if point.app_fingerprint != app_fingerprint(layout):
        raise ConfigError(
            "resume",
            f"fedcare's code or the model changed since {run_dir.path} ran; a resumed "
            "run must use the same version. Reinstall that version or start a new run.",
        )
    return point


def resume_weights(
    run_dir: RunDirectory, point: ResumePoint, layout: ModelLayout
) -> list[np.ndarray]:
    """Load the resume point's global model, checked against the model's layout."""
    named = load_safetensors(run_dir.path / point.checkpoint)
    weights = [named[name] for name in layout.names]
    layout.check(weights, what=f"checkpoint {point.checkpoint}")
    return weights


def resume_optimizer_state(
    run_dir: RunDirectory, point: ResumePoint, config: RunConfig, layout: ModelLayout
) -> OptimizerState:
    """Return the server optimiser's state at the resume point (a fresh one for FedAvg).

    Raises
    ------
    ConfigError
        If the run uses a server optimiser but its moments are missing or do not
        fit the model.
    """
    if config.server_optimizer.optimizer is ServerOptimizerName.NONE:
        return OptimizerState(step=int(point.strategy_state.get("step", 0)))
    moments = point.strategy_state.get("moments")
    try:
        tensors = load_safetensors(run_dir.path / str(moments))
        state = OptimizerState.from_tensors(
            int(point.strategy_state["step"]), tensors, layout.names
        )
        layout.check(list(state.first_moment), what=f"first moment in {moments}")
        layout.check(list(state.second_moment), what=f"second moment in {moments}")
    except (OSError, KeyError, ValueError) as error:
        raise ConfigError(
            "resume",
            f"the {config.server_optimizer.optimizer} state of round {point.completed_round} "
            f"cannot be read ({type(error).__name__}: {error}); without its moments the run "
            "cannot continue as it was. Start a new run.",
        ) from None
    return state


def resume_config(run_path: Path) -> RunConfig:
    """Return the configuration to resume the run in ``run_path`` with.

    It is the run's own, marked as a resume.

    Raises
    ------
    ConfigError
        If the folder holds no readable ``config.json``, or the run already
        completed all its rounds (checked here, before anything starts).
    """
    try:
        recorded = json.loads((run_path / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            "resume", f"cannot read {run_path / CONFIG_JSON} ({error}); is {run_path} a run folder?"
        ) from None
    config = RunConfig.from_flat(recorded | {"out-dir": str(run_path.resolve()), "resume": True})
    point = run_path / RESUME_FILE
    if point.is_file() and _completed_round(point) >= config.federation.rounds:
        raise ConfigError(
            "resume",
            f"{run_path} already completed all {config.federation.rounds} rounds; "
            "nothing to resume",
        )
    return config


def _completed_round(path: Path) -> int:
    """Return the last complete round a resume point records (0 if it cannot be read)."""
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["completed_round"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class ProgressWriter:
    """Persist a run's progress after every round: its record, then its resume point.

    Parameters
    ----------
    run_dir : RunDirectory
        The run folder.
    record : RunRecord
        The run's record, written as ``metrics.json``.
    config : RunConfig
        The run's configuration (fingerprinted).
    layout : ModelLayout
        The model's layout (fingerprinted with the code).
    ledger_run : str
        The run id hospitals book privacy spending under.
    """

    def __init__(
        self,
        run_dir: RunDirectory,
        record: RunRecord,
        *,
        config: RunConfig,
        layout: ModelLayout,
        ledger_run: str,
    ) -> None:
        self._run_dir = run_dir
        self._record = record
        self._ledger_run = ledger_run
        self._config_fingerprint = run_config_hash(config)
        self._app_fingerprint = app_fingerprint(layout)

    def round_aggregated(
        self, server_round: int, checkpoint: Path, optimizer: tuple[int, Path | None]
    ) -> None:
        """Record that ``server_round``'s global model is safely in ``checkpoint``.

        ``optimizer`` is the server optimiser's step count and the file of its
        moments (``None`` for FedAvg, which has none).
        """
        self.save_record()
        step, moments = optimizer
        strategy_state: dict[str, Any] = {"step": step}
        if moments is not None:
            strategy_state["moments"] = str(moments.relative_to(self._run_dir.path))
        point = ResumePoint(
            completed_round=server_round,
            checkpoint=str(checkpoint.relative_to(self._run_dir.path)),
            ledger_run=self._ledger_run,
            config_fingerprint=self._config_fingerprint,
            app_fingerprint=self._app_fingerprint,
            strategy_state=strategy_state,
        )
        save_resume_point(self._run_dir, point)

    def save_record(self) -> None:
        """Write the record so far (``metrics.json``), atomically."""
        self._run_dir.write_json(METRICS_JSON, self._record.to_dict())


def restored_record(run_dir: RunDirectory, point: ResumePoint) -> RunRecord:
    """Return the run's record up to the resume point (empty if it was never written)."""
    path = run_dir.path / METRICS_JSON
    if not path.is_file():
        return RunRecord()
    payload = json.loads(path.read_text(encoding="utf-8"))
    return RunRecord.from_dict(payload, through_round=point.completed_round)


def _changed_keys(run_dir: RunDirectory, config: RunConfig) -> str:
    try:
        recorded = json.loads((run_dir.path / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    current = config.to_flat()
    changed = sorted(
        key
        for key in set(recorded) | set(current)
        if key not in BOOKKEEPING_KEYS and recorded.get(key) != current.get(key)
    )
    return "changed: " + ", ".join(changed) if changed else ""
