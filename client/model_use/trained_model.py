"""A run's final model, loaded at a hospital with the contract its inputs must meet.

A run folder (written by ``fedcare simulate`` or ``fedcare run``) holds
``config.json`` (the run's settings, the data contract of a deployed run) and
``model.safetensors`` (the final global model; its metadata names the model,
the task and the input's features). Nothing from the folder is imported or
executed: the model is rebuilt from fedcare's own registry and only its tensors
are read, without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.contract import DataContract
from fedcare.shared.data import InputKind, Standardizer
from fedcare.shared.errors import FedcareError
from fedcare.shared.run_model import build_run_model, run_task
from fedcare.shared.scoring import model_outputs
from fedcare.shared.serialization import ModelLayout, load_safetensors, set_weights
from fedcare.shared.tasks import Task, TaskKind

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
MODEL_CARD_JSON = "model_card.json"
SCORED_TASKS = frozenset({TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.REGRESSION})
"""Tasks whose models make a prediction a hospital can use, validate and serve."""


class ModelUseError(FedcareError):
    """A run's model cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class TrainedModel:
    """A run's final model, ready to score inputs that meet its contract.

    Attributes
    ----------
    run : Path
        The run folder.
    config : RunConfig
        The run's settings.
    contract : DataContract
        What every input must meet (the run's, or the one given for a simulated run).
    task : Task
        What the model predicts.
    model : nn.Module
        The network with the final weights, in evaluation mode, on the CPU.
    round : int
        The last round aggregated into these weights.
    """

    run: Path
    config: RunConfig
    contract: DataContract
    task: Task
    model: nn.Module
    round: int

    @property
    def kind(self) -> InputKind:
        """What one input is: a table row, an image or a padded sequence."""
        return self.contract.input_kind()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The model's input features, in order (table columns, channels)."""
        return self.contract.feature_names()

    @property
    def scaler(self) -> Standardizer:
        """Scale inputs as every hospital did in training: with the contract's public ranges.

        Training never used a hospital's own statistics (they would have put one
        patient's values into every other patient's inputs, outside DP), so using
        the model needs no reference data either.
        """
        return Standardizer.from_bounds(self.contract.feature_bounds(), self.kind)

    def outputs(self, inputs: np.ndarray) -> torch.Tensor:
        """Return raw outputs (logits) for scaled ``inputs``."""
        return model_outputs(self.model, inputs, torch.device("cpu"))

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """Return the task's scores (probabilities, or values) for scaled ``inputs``."""
        return self.task.scores(self.outputs(inputs))

    def model_card(self) -> dict[str, object] | None:
        """Return the run's model card (``model_card.json``), or ``None`` for an older run."""
        path = self.run / MODEL_CARD_JSON
        if not path.is_file():
            return None
        card: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
        return card


def load_trained_model(run: Path, contract_path: Path | None = None) -> TrainedModel:
    """Load the final model of the run in ``run``.

    Parameters
    ----------
    run : Path
        A run folder.
    contract_path : Path | None
        The contract inputs must meet. A deployed run carries its own, and a
        contract given must be that one; a simulated run carries none, so one
        is needed that describes the model's input exactly (same features, in
        the same order).

    Raises
    ------
    ModelUseError
        If the folder holds no run, the model predicts nothing a hospital can
        use (an autoencoder, a recommender), the contract does not fit, or it
        fills empty cells (not built for model use yet).
    shared.contract.ContractError
        If the contract file is malformed.
    """
    config = _run_config(run)
    contract = _contract(run, config, contract_path)
    if any(feature.missing.fills for feature in contract.features):
        raise ModelUseError(
            f'{run}: its contract fills empty cells (missing = "impute" or "forward-fill"); '
            "scoring needs the same fills, indicators and observation channels as training, "
            "which model use does not build yet"
        )
    path = run / MODEL_FILE
    if not path.is_file():
        raise ModelUseError(f"{run} holds no {MODEL_FILE}; has the run finished a round?")
    metadata = _metadata(path)
    task = _task(config, contract, metadata)
    _check_features(contract, metadata, run)
    # The run's model as training built it: plugin, size, fixed layers, and the
    # pretrained backbone the hospital holds (frozen tensors are not in the file).
    model = build_run_model(
        config.training,
        input_shape=contract.input_shape(),
        input_kind=contract.input_kind(),
        task=task,
        seed=config.data.seed,
        private=config.privacy.enabled,
        party="this hospital",
    ).module
    stored = load_safetensors(path)
    layout = ModelLayout.of(model)
    absent = [name for name in layout.names if name not in stored]
    if absent:
        raise ModelUseError(
            f"{path} lacks parameter '{absent[0]}' of a {config.training.model} model; "
            "the file does not belong to this run's model"
        )
    set_weights(model, [stored[name] for name in layout.names], what=str(path))
    model.eval()
    return TrainedModel(run, config, contract, task, model, int(metadata.get("fedcare-round", 0)))


def _run_config(run: Path) -> RunConfig:
    path = run / CONFIG_FILE
    if not path.is_file():
        raise ModelUseError(
            f"{run} is not a run folder ({CONFIG_FILE} is missing); give the folder "
            "`fedcare simulate` or `fedcare run` wrote"
        )
    try:
        flat = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise ModelUseError(f"{path} is not valid JSON; the run folder is damaged") from None
    return RunConfig.from_flat(flat)


def _contract(run: Path, config: RunConfig, given: Path | None) -> DataContract:
    own = config.data.contract
    if given is None:
        if not own:
            raise ModelUseError(
                f"{run} is a simulated run and carries no data contract; give the contract "
                "that describes the model's input with --contract (for the breast-cancer "
                "simulation: the contract.toml `fedcare demo-data` writes)"
            )
        return DataContract.parse(own, source=f"{run}/{CONFIG_FILE}")
    contract = DataContract.load(given)
    if own and contract.fingerprint() != DataContract.parse(own, source="run").fingerprint():
        raise ModelUseError(
            f"{given} differs from the contract run {run} was trained under; leave out "
            "--contract to use the run's own"
        )
    return contract


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="np") as handle:
        return dict(handle.metadata() or {})


def _task(config: RunConfig, contract: DataContract, metadata: dict[str, str]) -> Task:
    task = run_task(config.training, contract.task())
    if task.kind not in SCORED_TASKS:
        raise ModelUseError(
            f"model '{config.training.model}' learns {task.kind}, which predicts nothing to "
            "validate or serve; these commands take binary, multiclass and regression models"
        )
    if task.kind is TaskKind.REGRESSION and "target-scale" in metadata:
        # Regression targets were learnt scaled; the checkpoint records the federation's constants.
        return Task(
            TaskKind.REGRESSION,
            target_center=float(metadata["target-center"]),
            target_scale=float(metadata["target-scale"]),
        )
    return task


def _check_features(contract: DataContract, metadata: dict[str, str], run: Path) -> None:
    recorded = metadata.get("features")
    if recorded is None:
        return
    names = ",".join(contract.feature_names())
    # Spaces and underscores count as one: the demo files (`fedcare demo-data`) spell the
    # built-in data's feature names with underscores.
    if recorded.replace(" ", "_") != names.replace(" ", "_"):
        shown = recorded if len(recorded) < 200 else recorded[:200] + "..."
        raise ModelUseError(
            f"the contract's input ({contract.source}) is not the model's: run {run} was "
            f"trained on features {shown}; give the contract the run was trained under"
        )
