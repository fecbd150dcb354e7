"""The run folder: where a run's config, checkpoints, metrics and report live."""

from __future__ import annotations

import json
import math
import os
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcare.shared.errors import ConfigError, FedcareError

RUNS_DIR = "runs"
CHECKPOINTS = "checkpoints"
LOG_FILE = "fedcare.log"
"""The run's full log (Flower's, Ray's and fedcare's lines, and what stopped the run if
anything did), written from the start of the run: what an operator is pointed to
when the run fails. A folder holding only this file is still a new run's folder."""


def default_run_path(now: datetime | None = None) -> Path:
    """``runs/<UTC timestamp>`` under the working directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return Path(RUNS_DIR) / stamp


def check_run_path(path: Path) -> None:
    """Refuse a folder that already holds files, so no run ever overwrites another.

    Raises
    ------
    ConfigError
        Naming the folder and what to do.
    """
    if path.exists() and (
        not path.is_dir() or any(entry.name != LOG_FILE for entry in path.iterdir())
    ):
        raise ConfigError(
            "out-dir",
            f"'{path}' already exists and is not an empty folder; choose another --out "
            "or move that one away",
        )


def record_failure(run_path: Path | None, error: BaseException) -> str:
    """Append what stopped a run to its folder's log; return the one sentence for the operator.

    A bad setting (an occupied folder among them), or an error fedcare raised
    on purpose before the run folder existed, is its own explanation and writes
    nothing; anything else leaves its traceback in ``<run>/fedcare.log``,
    created if need be.

    Returns
    -------
    str
        One line: what stopped the run and, where it was written, the log's path.
    """
    what = " ".join(str(error).split())
    planned = isinstance(error, FedcareError)
    sentence = what if planned else f"{type(error).__name__}: {what}"
    if run_path is None or isinstance(error, ConfigError) or (planned and not run_path.is_dir()):
        return f"the run did not start: {sentence}"
    run_path.mkdir(parents=True, exist_ok=True)
    log_path = run_path / LOG_FILE
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"{datetime.now(UTC).isoformat()} the run stopped:\n")
        log.write("".join(traceback.format_exception(error)))
    return f"the run stopped: {sentence} (details in {log_path})"


class RunDirectory:
    """A run folder whose files are each written atomically.

    Parameters
    ----------
    path : Path
        The folder; created (with parents) if missing.
    reopen : bool
        Continue writing into an existing run's folder (a resume) rather than
        refuse a folder that already holds files.
    """

    def __init__(self, path: Path, *, reopen: bool = False) -> None:
        if reopen and not path.is_dir():
            raise ConfigError("out-dir", f"'{path}' is not a run folder; nothing to resume")
        if not reopen:
            check_run_path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CHECKPOINTS).mkdir(exist_ok=True)
        self.path = path

    def checkpoint_path(self, server_round: int) -> Path:
        """Where the global model after ``server_round`` is kept."""
        return self.path / CHECKPOINTS / f"round-{server_round:03d}.safetensors"

    def optimizer_state_path(self, server_round: int) -> Path:
        """Where the server optimiser's moments after ``server_round`` are kept."""
        return self.path / CHECKPOINTS / f"round-{server_round:03d}-optimizer.safetensors"

    def write_json(self, name: str, payload: Any) -> Path:
        """Write ``payload`` as ``name`` (NaN and infinities become null)."""
        return self.write_text(name, json.dumps(_json_safe(payload), indent=2) + "\n")

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``name`` via a temp file, fsync and rename."""
        target = self.path / name
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return target


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None``: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
