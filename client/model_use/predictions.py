"""Predict for every patient of a file: one row each, scored or reported with its fault.

The rows of ``predictions.csv`` follow the file: each patient, stay or image has
its id, ``status`` (``scored`` or ``not scored``), the predicted class (or
value) and its probability, every class's probability for a multiclass task,
and for a patient that could not be scored the fields at fault and the rule
each breaks (never the value). With ``explain``, each scored row also has its
integrated-gradients attribution per feature (images: the maps go to a ``.npz``
beside the CSV).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.client.model_use.explanations import (
    explained_names,
    integrated_gradients,
    per_feature,
)
from fedcare.client.model_use.prediction_file import PatientsToScore, read_patients
from fedcare.client.model_use.trained_model import ModelUseError, TrainedModel
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.private_files import write_private
from fedcare.shared.tasks import TaskKind

SCORED = "scored"
NOT_SCORED = "not scored"


@dataclass(frozen=True)
class PredictionTable:
    """Predictions for a file, and the image attribution maps when asked for."""

    rows: pd.DataFrame
    maps: np.ndarray | None = None

    @property
    def not_scored(self) -> int:
        """How many patients could not be scored."""
        return int((self.rows["status"] == NOT_SCORED).sum())


def predict_file(
    trained: TrainedModel,
    data: Path,
    *,
    threshold: float = 0.5,
    explain: bool = False,
) -> PredictionTable:
    """Predict for every patient of ``data``.

    Raises
    ------
    shared.errors.FedcareError
        If the file cannot be read or its columns break the contract, or no
        patient can be scored.
    """
    patients = read_patients(data, trained.contract)
    if not patients.valid:
        shown = "; ".join(str(problem) for problem in patients.problems[:5])
        raise ModelUseError(
            f"{data}: none of its {len(patients.ids)} patients meets the contract, so nothing "
            f"was written; for example {shown}"
        )
    inputs = trained.scaler.transform(_as_examples(trained, patients.inputs)).features
    scores = trained.scores(inputs)
    rows = _rows(trained, patients, scores, threshold)
    maps = None
    if explain:
        summed = per_feature(
            integrated_gradients(trained.model, inputs, trained.task, trained.kind), trained.kind
        )
        if trained.kind is InputKind.IMAGES:
            maps = summed
        else:
            names = explained_names(trained.feature_names, trained.kind)
            for column, name in enumerate(names):
                values = np.full(len(patients.ids), np.nan)
                values[patients.valid] = summed[:, column]
                rows[f"attribution:{name}"] = values
    return PredictionTable(rows, maps)


def _as_examples(trained: TrainedModel, inputs: np.ndarray) -> Examples:
    return Examples(
        inputs, np.zeros(len(inputs), dtype=np.float32), trained.feature_names, trained.kind
    )


def id_column(trained: TrainedModel) -> str:
    """Return the predictions' id column name: the contract's, else ``row`` or ``image``."""
    contract = trained.contract
    if contract.sequences is not None:
        return contract.sequences.id_column
    if contract.images is not None:
        return "image"
    return contract.id_columns[0] if contract.id_columns else "row"


def _rows(
    trained: TrainedModel, patients: PatientsToScore, scores: np.ndarray, threshold: float
) -> pd.DataFrame:
    count = len(patients.ids)
    rows = pd.DataFrame({id_column(trained): patients.ids, "status": NOT_SCORED})
    rows.loc[patients.valid, "status"] = SCORED
    predicted, probability, per_class = predicted_values(trained, scores, threshold)
    rows["predicted"] = _spread(count, patients.valid, predicted, "")
    if probability is not None:
        rows["probability"] = _spread(count, patients.valid, probability, np.nan)
    for name, values in per_class.items():
        rows[f"probability:{name}"] = _spread(count, patients.valid, values, np.nan)
    if patients.labels is not None:
        classes = trained.contract.classes
        rows["label"] = [classes[int(i)] for i in _class_indices(trained, patients.labels)]
    faults: dict[int, list[str]] = {}
    for problem in patients.problems:
        faults.setdefault(problem.position, []).append(
            f"{problem.field or 'record'}: {problem.message}"
        )
    rows["problem"] = ["; ".join(faults.get(position, [])) for position in range(count)]
    return rows


def predicted_values(
    trained: TrainedModel, scores: np.ndarray, threshold: float
) -> tuple[list[object], np.ndarray | None, dict[str, np.ndarray]]:
    """Return each prediction, its probability and (multiclass) every class's probability.

    Binary: the positive class when its probability reaches ``threshold``, else
    the other class, with the positive class's probability. Multiclass: the most
    probable class and its probability. Regression: the value, no probability.
    """
    classes = trained.contract.classes
    task = trained.task
    if task.kind is TaskKind.BINARY:
        positive = str(trained.contract.positive_class)
        negative = next(name for name in classes if name != positive)
        return [positive if p >= threshold else negative for p in scores], scores, {}
    if task.kind is TaskKind.MULTICLASS:
        top = scores.argmax(axis=1)
        per_class = {name: scores[:, index] for index, name in enumerate(classes)}
        return [classes[i] for i in top], scores.max(axis=1), per_class
    return [float(value) for value in scores], None, {}


def _class_indices(trained: TrainedModel, labels: np.ndarray) -> np.ndarray:
    contract = trained.contract
    if trained.task.kind is TaskKind.BINARY:
        positive = contract.classes.index(str(contract.positive_class))
        return np.where(labels > 0.5, positive, 1 - positive)
    return labels.astype(int)


def _spread(count: int, valid: list[int], values: object, empty: object) -> list[object]:
    spread: list[object] = [empty] * count
    for position, value in zip(valid, list(values), strict=True):  # type: ignore[call-overload]
        spread[position] = value
    return spread


def write_predictions(path: Path, table: PredictionTable) -> list[Path]:
    """Write the predictions (and image attribution maps) owner-only; return the paths.

    Raises
    ------
    FileExistsError
        If ``path`` (or the maps' file) already exists: predictions are never overwritten.
    """
    maps_path = path.with_suffix(".attributions.npz")
    for target in (path, maps_path) if table.maps is not None else (path,):
        if target.exists():
            raise FileExistsError(f"'{target}' already exists; choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, table.rows.to_csv(index=False).encode("utf-8"))
    written = [path]
    if table.maps is not None:
        scored = table.rows[table.rows["status"] == SCORED]
        ids = np.asarray(scored.iloc[:, 0].astype(str).tolist(), dtype=np.str_)  # no pickle
        buffer = io.BytesIO()
        np.savez_compressed(buffer, ids=ids, maps=table.maps)
        write_private(maps_path, buffer.getvalue())
        written.append(maps_path)
    return written
