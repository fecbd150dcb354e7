"""Run folders and hospital files of every format, for the model-use tests.

A run folder is written with the aggregator's own pieces (``RunDirectory``,
``CheckpointWriter``, the checkpoint metadata) around a model trained briefly
with plain PyTorch on one hospital's file, read as the hospital reads it: the
commands under test cannot tell it from a federation's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedcare.client.readers import read_site_data
from fedcare.server.aggregator import checkpoint_metadata
from fedcare.server.checkpoint import CheckpointWriter
from fedcare.server.reference import contract_reference
from fedcare.server.report import CONFIG_JSON
from fedcare.server.run_directory import RunDirectory
from fedcare.shared.config.data import DataSettings
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName
from fedcare.shared.contract import DataContract
from fedcare.shared.data import Standardizer
from fedcare.shared.models import build_model
from fedcare.shared.serialization import ModelLayout, get_weights
from fedcare.simulations.hospital_files import write_demo_hospitals
from fedcare.simulations.synthetic_images import make_images
from fedcare.simulations.synthetic_patients import VITAL_COLUMNS, make_vitals

IMAGE_CONTRACT = """
name = "chest-films"
format = "images"
task = "multiclass"
classes = ["normal", "nodule", "opacity"]
min_rows = 30
min_rows_per_class = 5

[images]
channels = 1
height = 28
width = 28
"""

SEQUENCE_CONTRACT = """
name = "icu-deterioration"
format = "sequences"
task = "binary"
label = "deterioration"
classes = ["0", "1"]
positive_class = "1"
min_rows = 30
min_rows_per_class = 5

[sequences]
id_column = "patient_id"
time_column = "hour"
max_length = 12
min_length = 4
""" + "".join(
    f'\n[features.{name}]\ntype = "float"\nmin = 0.0\nmax = 400.0\n' for name in VITAL_COLUMNS
)


@dataclass(frozen=True)
class Hospital:
    """A run folder and the files of two hospitals: one it trained on, one it never saw."""

    run: Path
    contract: Path
    train: Path
    external: Path


def write_run(
    folder: Path, contract_text: str, model: ModelName, train: Path, *, epochs: int = 60
) -> Path:
    """Train ``model`` on ``train`` (scaled with the contract's public ranges); write a run."""
    config = RunConfig.from_flat(
        {"contract": contract_text, "model": model.value, "out-dir": str(folder), "device": "cpu"}
    )
    reference = contract_reference(contract_text, config.training)
    contract = DataContract.parse(contract_text, source="test contract")
    examples = read_site_data(train, contract)
    scaler = Standardizer.from_bounds(contract.feature_bounds(), contract.input_kind())
    inputs = scaler.transform(examples)
    network = build_model(
        model,
        input_shape=reference.input_shape,
        input_kind=reference.input_kind,
        task=reference.task,
        seed=0,
    )
    _train(network, inputs.features, inputs.labels, reference.task, epochs)
    run_dir = RunDirectory(folder)
    run_dir.write_json(CONFIG_JSON, config.to_flat())
    writer = CheckpointWriter(
        run_dir, ModelLayout.of(network), checkpoint_metadata(config, reference)
    )
    writer.save_final(3, get_weights(network))
    return folder


def _train(
    network: torch.nn.Module, features: np.ndarray, labels: np.ndarray, task: object, epochs: int
) -> None:
    torch.manual_seed(0)
    loss_fn = task.loss_fn()  # type: ignore[attr-defined]
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    inputs = torch.from_numpy(features)
    targets = torch.as_tensor(labels, dtype=task.label_dtype)  # type: ignore[attr-defined]
    network.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss_fn(network(inputs), targets).backward()
        optimizer.step()
    network.eval()


def table_hospitals(folder: Path, model: ModelName = ModelName.LOGREG) -> Hospital:
    """The breast-cancer demo files (three hospitals), and a run trained on hospital-1."""
    files = write_demo_hospitals(folder / "demo", DataSettings())
    text = files.contract.read_text(encoding="utf-8")
    run = write_run(folder / "run", text, model, files.hospitals["hospital-1"])
    return Hospital(
        run, files.contract, files.hospitals["hospital-1"], files.hospitals["hospital-2"]
    )


def write_images(path: Path, count: int, seed: int, size: int = 28) -> Path:
    """Write synthetic films (normal, nodule, opacity) as a MedMNIST-style ``.npz``."""
    images, labels = make_images(count, num_classes=3, seed=seed, size=size)
    pixels = (images[:, 0] * 255).round().astype(np.uint8)
    np.savez(path, train_images=pixels, train_labels=labels.astype(np.int64))
    return path


def image_hospitals(folder: Path, model: ModelName = ModelName.LOGREG) -> Hospital:
    """Two hospitals' films, and a run trained on the first."""
    folder.mkdir(parents=True, exist_ok=True)
    contract = folder / "contract.toml"
    contract.write_text(IMAGE_CONTRACT, encoding="utf-8")
    train = write_images(folder / "site-a.npz", 240, seed=1)
    external = write_images(folder / "site-b.npz", 120, seed=2)
    run = write_run(folder / "run", IMAGE_CONTRACT, model, train, epochs=80)
    return Hospital(run, contract, train, external)


def write_vitals(path: Path, count: int, seed: int) -> Path:
    """Write synthetic ICU stays in long format, one row per patient per hour."""
    frame = make_vitals(count, max_length=12, min_length=6, seed=seed)
    frame["deterioration"] = frame["deterioration"].astype(int)
    frame.to_csv(path, index=False)
    return path


def sequence_hospitals(
    folder: Path, model: ModelName = ModelName.LOGREG, *, epochs: int = 150
) -> Hospital:
    """Two hospitals' ICU stays, and a run trained on the first."""
    folder.mkdir(parents=True, exist_ok=True)
    contract = folder / "contract.toml"
    contract.write_text(SEQUENCE_CONTRACT, encoding="utf-8")
    train = write_vitals(folder / "icu-a.csv", 300, seed=1)
    external = write_vitals(folder / "icu-b.csv", 200, seed=2)
    run = write_run(folder / "run", SEQUENCE_CONTRACT, model, train, epochs=epochs)
    return Hospital(run, contract, train, external)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV the tests wrote or the commands wrote, every cell as text."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)
