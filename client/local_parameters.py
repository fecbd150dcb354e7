"""A hospital's site-local model parameters (its patients' embeddings), kept between rounds.

Parameters named ``local_*`` never leave the hospital (:mod:`shared.serialization`):
the global model carries no value for them. So the hospital keeps its own, one
file per run in its state folder: loaded before it trains or evaluates (a fresh,
seeded initialisation the first time), written back after a round's update is
recorded as released. They are derived from patient data, so the file is its
owner's alone (``0600``, in an owner-only folder).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from torch import nn

from fedcare.client.state_files import LOCAL_DIR
from fedcare.shared.serialization import (
    get_local_weights,
    is_local,
    load_safetensors,
    save_safetensors,
    set_local_weights,
)

PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700
_PLAIN_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def run_file_stem(run_id: str) -> str:
    """Return ``run-<id>``, the stem of a per-run file in a hospital's state folder.

    A run id that is not a plain name (Flower's are numbers) is hashed, so it
    can never point outside the folder.
    """
    plain = _PLAIN_RUN_ID.fullmatch(run_id)
    return f"run-{run_id if plain else hashlib.sha256(run_id.encode()).hexdigest()}"


def local_parameters_path(state: Path, run_id: str) -> Path:
    """Return the file of run ``run_id``'s local parameters in state folder ``state``."""
    return state / LOCAL_DIR / f"{run_file_stem(run_id)}.safetensors"


def has_local_parameters(model: nn.Module) -> bool:
    """Whether ``model`` has any site-local parameter."""
    return any(is_local(name) for name in model.state_dict())


def load_local_parameters(model: nn.Module, state: Path, run_id: str, *, site: str) -> None:
    """Load the run's local parameters into ``model`` if an earlier round wrote them.

    Raises
    ------
    shared.errors.InvalidUpdateError
        If the file does not fit the model (say the hospital's patient list
        changed since the run started).
    """
    path = local_parameters_path(state, run_id)
    if has_local_parameters(model) and path.exists():
        set_local_weights(model, load_safetensors(path), what=f"{site}: local parameters in {path}")


def save_local_parameters(model: nn.Module, state: Path, run_id: str) -> None:
    """Write ``model``'s local parameters for run ``run_id`` atomically, owner-only."""
    tensors = get_local_weights(model)
    if not tensors:
        return
    path = local_parameters_path(state, run_id)
    path.parent.mkdir(mode=_PRIVATE_DIR, parents=True, exist_ok=True)
    save_safetensors(path, tensors, {"run": run_id}, mode=PRIVATE_FILE)
