"""Export a run to experiment trackers: MLflow and TensorBoard.

A run folder already holds everything a tracker shows: the settings
(``config.json``), every round's metrics, each hospital's epsilon and training
loss (``metrics.json``), the final summary and the model. :func:`track_run`
copies them into MLflow (a local ``mlruns/`` folder by default, or any tracking
URI) and into TensorBoard event files (``tensorboard/`` in the run folder), with
the round as the step. It reads only the aggregator's own record: no patient
data, nothing a hospital did not already send.

Both libraries are optional (``pip install fedcare[track]``) and imported only here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedcare.shared.errors import FedcareError

TENSORBOARD_DIR = "tensorboard"
DEFAULT_MLFLOW_URI = "mlruns"
EXPERIMENT = "fedcare"
_ARTIFACTS = ("model.safetensors", "summary.json", "metrics.csv", "model_card.md", "report.png")
_PARAM_LIMIT = 500


class Tracker(StrEnum):
    """Where a run can be tracked."""

    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class RunFiles:
    """What a run folder says, as trackers take it."""

    path: Path
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    summary: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> RunFiles:
        """Read the run folder at ``path``.

        Raises
        ------
        FedcareError
            If it holds no finished run's report.
        """
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
            summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise FedcareError(
                f"{path} holds no run report (config.json, metrics.json, summary.json); give a "
                "run folder a finished (or stopped) run wrote"
            ) from None
        return cls(path, config, list(metrics.get("rounds", [])), summary)

    def round_metrics(self) -> Iterator[tuple[int, dict[str, float]]]:
        """Yield each round's number and its metrics, named ``scope/metric``."""
        for record in self.rounds:
            values: dict[str, float] = {}
            for scope in ("test", "federated"):
                for name, value in (record.get(f"{scope}_metrics") or {}).items():
                    values[f"{scope}/{name}"] = value
            for hospital, entry in (record.get("hospitals") or {}).items():
                # Privacy scalars (epsilon, noise) sit beside training's in older records.
                for part in ("train", "privacy"):
                    for name, value in (entry.get(part) or {}).items():
                        values[f"{hospital}/{name}"] = value
                for name, value in (entry.get("evaluation") or {}).items():
                    values[f"{hospital}/eval-{name}"] = value
            finite = {k: float(v) for k, v in values.items() if _finite(v)}
            yield int(record["round"]), finite

    def final_metrics(self) -> dict[str, float]:
        """Return the summary's final metrics, named ``final/<model>/<metric>``."""
        return {
            f"final/{model}/{name}": float(value)
            for model, metrics in self.summary.get("final", {}).items()
            for name, value in metrics.items()
            if _finite(value)
        }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def parse_trackers(names: Sequence[str]) -> list[Tracker]:
    """Turn ``--track`` values into trackers.

    Raises
    ------
    FedcareError
        Naming an unknown tracker and the known ones.
    """
    trackers = []
    for name in names:
        try:
            trackers.append(Tracker(name))
        except ValueError:
            raise FedcareError(
                f"--track {name}: not a tracker; use {', '.join(tracker for tracker in Tracker)}"
            ) from None
    return trackers


def track_run(
    path: Path, trackers: Sequence[Tracker], *, tracking_uri: str | None = None
) -> list[str]:
    """Export the run in ``path`` to each tracker; return where each went.

    Raises
    ------
    FedcareError
        If the folder holds no run report, or a tracker's library is not installed.
    """
    run = RunFiles.read(path)
    where = []
    for tracker in trackers:
        if tracker is Tracker.MLFLOW:
            where.append(_to_mlflow(run, tracking_uri or DEFAULT_MLFLOW_URI))
        else:
            where.append(_to_tensorboard(run))
    return where


def _missing(package: str) -> FedcareError:
    return FedcareError(f"tracking needs {package}; install it with `pip install 'fedcare[track]'`")


def _to_mlflow(run: RunFiles, uri: str) -> str:
    try:
        import mlflow
    except ImportError:
        raise _missing("mlflow-skinny") from None
    if "://" not in uri and not uri.startswith("file:"):
        uri = Path(uri).resolve().as_uri()
    if uri.startswith("file:"):
        # MLflow 3 keeps its folder store (``mlruns/``) in maintenance and asks for this
        # opt-in; its database store needs the full mlflow package, not mlflow-skinny.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run.path.name) as active:
        mlflow.log_params(
            {
                key: str(value)[:_PARAM_LIMIT]
                for key, value in run.config.items()
                if key != "contract"
            }
        )
        mlflow.set_tags({"status": run.summary.get("status", ""), "run-folder": str(run.path)})
        for step, metrics in run.round_metrics():
            if metrics:
                mlflow.log_metrics(metrics, step=step)
        mlflow.log_metrics(run.final_metrics())
        if run.config.get("contract"):
            mlflow.log_text(str(run.config["contract"]), "contract.toml")
        for name in _ARTIFACTS:
            if (run.path / name).is_file():
                mlflow.log_artifact(str(run.path / name))
        return f"MLflow run {active.info.run_id} at {uri}"


def _to_tensorboard(run: RunFiles) -> str:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise _missing("tensorboard") from None
    folder = run.path / TENSORBOARD_DIR
    with SummaryWriter(log_dir=str(folder)) as writer:
        config = json.dumps(run.config, indent=2, sort_keys=True)
        writer.add_text("config", f"```\n{config}\n```")
        for step, metrics in run.round_metrics():
            for name, value in metrics.items():
                writer.add_scalar(name, value, global_step=step)
        for name, value in run.final_metrics().items():
            writer.add_scalar(name, value, global_step=0)
        model = run.path / "model.safetensors"
        if model.is_file():
            writer.add_text("model", f"final model: {model} (safetensors)")
    return f"TensorBoard event files in {folder}"
