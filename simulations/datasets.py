"""Datasets shipped inside installed packages or generated from a seed, so simulations
never download anything.

Real data: Breast Cancer Wisconsin and the diabetes progression study (scikit-learn),
the NCCTG lung-cancer trial with its 18 institutions (lifelines). Synthetic data
with real structure stands in where no medical set ships in a package: chest-film
style images, ICU vitals sequences and treatment outcomes (:mod:`simulations.synthetic`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcare.shared.config import DatasetName
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.sequences import to_padded
from fedcare.shared.tasks import Task, TaskKind
from fedcare.simulations.synthetic import VITAL_COLUMNS, make_images, make_treatments, make_vitals
from fedcare.simulations.synthetic_records import RECORD_COLUMNS, make_records

SURVIVAL_BIN_EDGES_DAYS = (0.0, 90.0, 180.0, 270.0, 365.0, 540.0, 730.0)
"""Start of each time bin of the lung-cancer survival task; the last bin is open-ended."""

_LUNG_FEATURES = ("age", "sex", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss")
_SYNTHETIC_SEED = 20261123
_IMAGE_COUNT = 900
_IMAGE_CLASSES = ("normal", "nodule", "opacity")
_VITALS_PATIENTS = 600
_VITALS_HOURS = 24
_TREATMENT_PATIENTS = 600
_RECORD_COUNT = 80_000
"""Enough for 1,000 hospitals of 60 records after the test split: 48 to train on, 12 to
evaluate on (above the egress guard's minimum for aggregate metrics)."""
_TREATMENT_COUNT = 20


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset with its task and, where it has one, a natural site column.

    Attributes
    ----------
    data : Examples
        Every example of the dataset, unscaled.
    task : Task
        What the labels mean.
    sites : np.ndarray | None
        Per-example site (hospital) identifier for the ``natural`` partition.

    Notes
    -----
    Interaction data numbers its patients ``0 .. data.patients - 1`` over the
    whole dataset; a simulation deals out patients, not rows, and each hospital
    numbers its own (:func:`simulations.federation.build_federation`).
    """

    data: Examples
    task: Task
    sites: np.ndarray | None = None


def _breast_cancer() -> BuiltinDataset:
    """Breast Cancer Wisconsin (Diagnostic): 569 fine-needle aspirates, 30 features.

    scikit-learn codes benign as 1; fedcare relabels so that 1 means *malignant*,
    the condition being diagnosed, and sensitivity means malignancies caught.
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    labels = (bunch.target == 0).astype(np.float32)
    data = Examples(
        features=bunch.data.astype(np.float32),
        labels=labels,
        feature_names=tuple(str(name) for name in bunch.feature_names),
    )
    return BuiltinDataset(data=data, task=Task(TaskKind.BINARY, positive_label="malignant"))


def _diabetes() -> BuiltinDataset:
    """Diabetes progression (Efron et al. 2004): 442 patients, 10 baseline measurements,
    target a disease-progression score one year later (25 to 346).

    The target is learnt centred on 150 and scaled by 75, round numbers near the
    study's mean and spread, fixed for every party.
    """
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    data = Examples(
        features=bunch.data.astype(np.float32),
        labels=bunch.target.astype(np.float32),
        feature_names=tuple(str(name) for name in bunch.feature_names),
    )
    task = Task(TaskKind.REGRESSION, target_center=150.0, target_scale=75.0)
    return BuiltinDataset(data=data, task=task)


def _lung_survival() -> BuiltinDataset:
    """NCCTG advanced lung cancer trial (Loprinzi et al. 1994), from lifelines: survival
    in days of 228 patients at 18 institutions, which become the natural sites.

    Patients missing their institution or a performance score are left out; the
    two sparsely recorded measures (calories, weight loss) take the trial median.
    """
    from lifelines.datasets import load_lung

    frame = load_lung().dropna(subset=["inst", "ph.ecog", "ph.karno", "pat.karno"])
    features = frame[list(_LUNG_FEATURES)].astype(float)
    features = features.fillna(features.median())
    time_bins = np.searchsorted(SURVIVAL_BIN_EDGES_DAYS, frame["time"].to_numpy(), side="right") - 1
    died = (frame["status"].to_numpy() == 1).astype(np.float32)
    data = Examples(
        features=features.to_numpy(np.float32),
        labels=np.stack([time_bins.astype(np.float32), died], axis=1),
        feature_names=_LUNG_FEATURES,
    )
    task = Task(TaskKind.SURVIVAL, num_classes=len(SURVIVAL_BIN_EDGES_DAYS))
    return BuiltinDataset(data=data, task=task, sites=frame["inst"].to_numpy(int))


def _synthetic_images() -> BuiltinDataset:
    """900 synthetic 28x28 grayscale films: normal, nodule, or diffuse opacity."""
    images, labels = make_images(
        _IMAGE_COUNT, num_classes=len(_IMAGE_CLASSES), seed=_SYNTHETIC_SEED
    )
    data = Examples(images, labels, ("gray",), InputKind.IMAGES)
    return BuiltinDataset(data=data, task=Task(TaskKind.MULTICLASS, num_classes=3))


def _synthetic_vitals() -> BuiltinDataset:
    """600 synthetic ICU stays of up to 24 hourly vitals and lactate; the label is
    deterioration, which shows in the trends more than in the levels.
    """
    frame = make_vitals(_VITALS_PATIENTS, max_length=_VITALS_HOURS, seed=_SYNTHETIC_SEED)
    inputs, labels, _ = to_padded(
        frame,
        id_column="patient_id",
        time_column="hour",
        features=VITAL_COLUMNS,
        label="deterioration",
        max_length=_VITALS_HOURS,
    )
    data = Examples(
        inputs, labels.astype(np.float32), (*VITAL_COLUMNS, "observed"), InputKind.SEQUENCES
    )
    return BuiltinDataset(data=data, task=Task(TaskKind.BINARY, positive_label="deterioration"))


def _synthetic_records() -> BuiltinDataset:
    """Load 80,000 synthetic discharge records; the label is readmission within 30 days.

    Twelve routine measurements each; enough rows for federations of 1,000 hospitals.
    """
    features, labels = make_records(_RECORD_COUNT, seed=_SYNTHETIC_SEED)
    data = Examples(features=features, labels=labels, feature_names=RECORD_COLUMNS)
    return BuiltinDataset(data=data, task=Task(TaskKind.BINARY, positive_label="readmitted"))


def _treatments() -> BuiltinDataset:
    """600 synthetic patients, each given 8 of 20 treatments, with their outcomes.

    Outcomes follow a low-rank patient-treatment affinity plus treatment popularity,
    and prescribing favours likely responders (:func:`simulations.synthetic.make_treatments`).
    """
    frame = make_treatments(
        _TREATMENT_PATIENTS, n_treatments=_TREATMENT_COUNT, seed=_SYNTHETIC_SEED
    )
    patient_ids, patients = np.unique(frame["patient_id"].to_numpy(), return_inverse=True)
    treatment_names, treatments = np.unique(frame["treatment"].to_numpy(), return_inverse=True)
    data = Examples(
        features=np.stack([patients, treatments], axis=1).astype(np.int64),
        labels=frame["outcome"].to_numpy(np.float32),
        feature_names=tuple(str(name) for name in treatment_names),
        kind=InputKind.INTERACTIONS,
        patients=len(patient_ids),
    )
    return BuiltinDataset(data=data, task=Task(TaskKind.RECOMMENDATION, positive_label="response"))


_LOADERS = {
    DatasetName.BREAST_CANCER: _breast_cancer,
    DatasetName.DIABETES: _diabetes,
    DatasetName.LUNG_SURVIVAL: _lung_survival,
    DatasetName.SYNTHETIC_IMAGES: _synthetic_images,
    DatasetName.SYNTHETIC_VITALS: _synthetic_vitals,
    DatasetName.SYNTHETIC_RECORDS: _synthetic_records,
    DatasetName.TREATMENTS: _treatments,
}


def load_builtin(name: DatasetName) -> BuiltinDataset:
    """Load built-in dataset ``name`` from the installed packages or its fixed seed."""
    return _LOADERS[name]()
