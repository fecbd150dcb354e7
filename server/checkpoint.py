"""Checkpoints of the global model, one safetensors file per aggregated round.

A server optimiser's moments are checkpointed beside the model, in their own
file, so the model file stays a plain model anyone can load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedcare.server.run_directory import RunDirectory
from fedcare.server.server_optimizer import OptimizerState
from fedcare.shared.serialization import ModelLayout, save_safetensors

ROUND_METADATA_KEY = "fedcare-round"
OPTIMIZER_STEP_KEY = "fedcare-optimizer-step"
FINAL_MODEL = "model.safetensors"


class CheckpointWriter:
    """Write the global model after each round, and the final model, atomically.

    Parameters
    ----------
    run_dir : RunDirectory
        The run folder.
    layout : ModelLayout
        Parameter names, stored as tensor names.
    metadata : Mapping[str, str]
        Stored in every file (model name, task, features) so a checkpoint is
        self-describing.
    """

    def __init__(
        self, run_dir: RunDirectory, layout: ModelLayout, metadata: Mapping[str, str]
    ) -> None:
        self._run_dir = run_dir
        self._layout = layout
        self._metadata = dict(metadata)

    def save_round(self, server_round: int, weights: Sequence[np.ndarray]) -> Path:
        """Save the global model after ``server_round``."""
        return self._save(self._run_dir.checkpoint_path(server_round), server_round, weights)

    def save_final(self, server_round: int, weights: Sequence[np.ndarray]) -> Path:
        """Save the run's final global model as ``model.safetensors``."""
        return self._save(self._run_dir.path / FINAL_MODEL, server_round, weights)

    def save_optimizer_state(self, server_round: int, state: OptimizerState) -> Path:
        """Save the server optimiser's moments after ``server_round``."""
        path = self._run_dir.optimizer_state_path(server_round)
        save_safetensors(
            path,
            state.to_tensors(self._layout.names),
            {ROUND_METADATA_KEY: str(server_round), OPTIMIZER_STEP_KEY: str(state.step)},
        )
        return path

    def _save(self, path: Path, server_round: int, weights: Sequence[np.ndarray]) -> Path:
        metadata = {**self._metadata, ROUND_METADATA_KEY: str(server_round)}
        save_safetensors(path, self._layout.named(weights), metadata)
        return path
