"""Small hospital files of every format, as users bring them to ``fedcare simulate --data``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_breast_cancer

from fedcare.simulations.synthetic_images import make_images
from fedcare.simulations.synthetic_patients import make_vitals

TABLE_FEATURES = {
    "mean radius": ("radius", 0.0, 40.0),
    "mean texture": ("texture", 0.0, 50.0),
    "mean concave points": ("concave", 0.0, 0.3),
    "worst area": ("area", 0.0, 5000.0),
}

TABLE_CONTRACT = """
name = "breast-cancer"
task = "binary"
label = "diagnosis"
classes = ["benign", "malignant"]
positive_class = "malignant"
id_columns = ["patient_id"]
min_rows = 30
min_rows_per_class = 10
min_rows_per_class_scope = "federation"

[features.radius]
type = "float"
min = 0.0
max = 40.0

[features.texture]
type = "float"
min = 0.0
max = 50.0

[features.concave]
type = "float"
min = 0.0
max = 0.3
missing = "impute"
fill = "dp-mean"
indicator = true

[features.area]
type = "float"
min = 0.0
max = 5000.0
"""


def cancer_table(seed: int = 0) -> pd.DataFrame:
    """Breast cancer rows with four features, ids, text labels and 30 % of one feature empty."""
    cancer = load_breast_cancer(as_frame=True).frame
    frame = cancer[list(TABLE_FEATURES)].rename(
        columns={name: spec[0] for name, spec in TABLE_FEATURES.items()}
    )
    frame.insert(0, "patient_id", [f"p{i:04d}" for i in range(len(frame))])
    frame["diagnosis"] = np.where(cancer["target"] == 0, "malignant", "benign")
    rng = np.random.default_rng(seed)
    frame.loc[rng.random(len(frame)) < 0.3, "concave"] = np.nan
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_table_hospitals(folder: Path) -> dict[str, Path]:
    """Three hospitals (two CSV, one Parquet holding benign patients only) and a test file."""
    frame = cancer_table()
    benign = frame[frame["diagnosis"] == "benign"]
    malignant = frame[frame["diagnosis"] == "malignant"]
    parts = {
        "north.csv": pd.concat([benign.iloc[:60], malignant.iloc[:50]]),
        "south.csv": pd.concat([benign.iloc[60:120], malignant.iloc[50:100]]),
        "single-class.parquet": benign.iloc[120:180],
        "test.csv": pd.concat([benign.iloc[180:240], malignant.iloc[100:140]]),
    }
    paths = {}
    for name, part in parts.items():
        path = folder / name
        if path.suffix == ".csv":
            part.to_csv(path, index=False)
        else:
            part.to_parquet(path, index=False)
        paths[path.stem] = path
    return paths


IMAGE_SIZE = 16
IMAGE_CLASSES = ("normal", "nodule", "opacity")
IMAGE_CONTRACT = f"""
name = "films"
format = "images"
task = "multiclass"
classes = {list(IMAGE_CLASSES)!r}
min_rows = 30
min_rows_per_class = 5

[images]
channels = 1
height = {IMAGE_SIZE}
width = {IMAGE_SIZE}
""".replace("'", '"')


def write_image_npz(path: Path, n: int, seed: int) -> Path:
    """A MedMNIST-style ``.npz``: uint8 ``(n, H, W)`` images and ``(n, 1)`` labels."""
    images, labels = make_images(n, num_classes=len(IMAGE_CLASSES), size=IMAGE_SIZE, seed=seed)
    np.savez(
        path,
        train_images=(images[:, 0] * 255).astype(np.uint8),
        train_labels=labels[:, None],
    )
    return path


def write_image_folder(folder: Path, n: int, seed: int) -> Path:
    """One PNG folder per class, as a hospital's image archive is often kept."""
    images, labels = make_images(n, num_classes=len(IMAGE_CLASSES), size=IMAGE_SIZE, seed=seed)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / IMAGE_CLASSES[int(label)]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).astype(np.uint8), mode="L").save(target / f"{index}.png")
    return folder


SEQUENCE_CONTRACT = """
name = "icu"
format = "sequences"
task = "binary"
label = "deterioration"
classes = ["0", "1"]
positive_class = "1"
min_rows = 30
min_rows_per_class = 5
missing = "forward-fill"

[sequences]
id_column = "stay_id"
time_column = "hour"
max_length = 12
min_length = 4

[features.heart_rate]
type = "float"
min = 0.0
max = 300.0
fill = 85.0

[features.resp_rate]
type = "float"
min = 0.0
max = 80.0
fill = 18.0

[features.lactate]
type = "float"
min = 0.0
max = 30.0
fill = "dp-mean"
"""


def vitals(n_patients: int, seed: int, unobserved: float = 0.7) -> pd.DataFrame:
    """ICU stays in long format with ``unobserved`` of the vitals' cells empty."""
    frame = make_vitals(n_patients, max_length=12, min_length=6, seed=seed)
    frame = frame.rename(columns={"patient_id": "stay_id"})
    frame = frame[["stay_id", "hour", "heart_rate", "resp_rate", "lactate", "deterioration"]]
    rng = np.random.default_rng(seed)
    for column in ("heart_rate", "resp_rate", "lactate"):
        frame.loc[rng.random(len(frame)) < unobserved, column] = np.nan
    return frame


def write_vitals(path: Path, n_patients: int, seed: int) -> Path:
    """One hospital's stays as CSV (or Parquet, by the suffix)."""
    frame = vitals(n_patients, seed)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
