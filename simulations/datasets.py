"""Datasets shipped inside installed packages or generated from a seed.

Simulations never download anything.

Real data: Breast Cancer Wisconsin and the diabetes progression study (scikit-learn),
the NCCTG lung-cancer trial with its 18 institutions (lifelines). Synthetic data
with real structure stands in where no medical set ships in a package: chest-film
style images (:mod:`simulations.synthetic_images`), ICU vitals sequences and
treatment outcomes (:mod:`simulations.synthetic_patients`).

Every dataset with numeric features comes with *public* bounds for them, the
simulation's stand-in for a data contract's ranges: hospitals scale features
with these, never with statistics of their rows. Where they come from:

* breast cancer: the minimum and maximum of each feature as the dataset's
  documentation publishes them (UCI, reprinted in scikit-learn's description),
  each on a log scale: the features are sizes, areas and shape measures whose
  ranges span one to three orders of magnitude, and on a linear scale most
  patients would sit in the bottom fifth of each range;
* diabetes and lung survival: the range each measurement can take clinically
  (rounded, wide), written down here, not read off the data;
* vitals: the range the generator draws each vital sign within.

Images are already in [0, 1] and interactions are indices: they have none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcare.shared.config.data import DatasetName
from fedcare.shared.data import Examples, FeatureBounds, InputKind
from fedcare.shared.sequences import to_padded
from fedcare.shared.tasks import Task, TaskKind
from fedcare.simulations.synthetic_images import make_images
from fedcare.simulations.synthetic_patients import (
    VITAL_COLUMNS,
    make_treatments,
    make_vitals,
    vital_ranges,
)
from fedcare.simulations.synthetic_records import RECORD_COLUMNS, make_records, record_ranges

SURVIVAL_BIN_EDGES_DAYS = (0.0, 90.0, 180.0, 270.0, 365.0, 540.0, 730.0)
"""Start of each time bin of the lung-cancer survival task; the last bin is open-ended."""

_LUNG_FEATURES = ("age", "sex", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss")

BREAST_CANCER_RANGES = (
    # (min, max) per feature, in scikit-learn's feature order, as published.
    (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.05263, 0.1634),
    (0.01938, 0.3454), (0.0, 0.4268), (0.0, 0.2012), (0.106, 0.304), (0.04996, 0.09744),
    (0.1115, 2.873), (0.3602, 4.885), (0.757, 21.98), (6.802, 542.2), (0.001713, 0.03113),
    (0.002252, 0.1354), (0.0, 0.396), (0.0, 0.05279), (0.007882, 0.07895), (0.0008948, 0.02984),
    (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.07117, 0.2226),
    (0.02729, 1.058), (0.0, 1.252), (0.0, 0.291), (0.1565, 0.6638), (0.05504, 0.2075),
)  # fmt: skip
"""Breast Cancer Wisconsin's published feature ranges (UCI; scikit-learn's ``DESCR``).

The published table rounds some ranges to 3 decimals; these are its unrounded values."""

DIABETES_RANGES = (
    (0.0, 100.0),  # age, years
    (1.0, 2.0),  # sex, coded 1 or 2
    (10.0, 60.0),  # body mass index, kg/m2
    (40.0, 180.0),  # mean arterial blood pressure, mmHg
    (50.0, 400.0),  # total serum cholesterol, mg/dL
    (0.0, 300.0),  # LDL cholesterol, mg/dL
    (0.0, 150.0),  # HDL cholesterol, mg/dL
    (1.0, 12.0),  # total cholesterol / HDL
    (2.0, 8.0),  # log of serum triglycerides
    (30.0, 250.0),  # blood glucose, mg/dL
)
"""Clinical ranges of the diabetes study's baseline measurements (rounded, wide)."""

LUNG_RANGES = (
    (18.0, 100.0),  # age, years
    (1.0, 2.0),  # sex, coded 1 or 2
    (0.0, 5.0),  # ECOG performance score, by definition
    (0.0, 100.0),  # Karnofsky score (physician), by definition
    (0.0, 100.0),  # Karnofsky score (patient), by definition
    (0.0, 4000.0),  # calories consumed at meals
    (-50.0, 100.0),  # weight lost in the last six months, pounds
)
"""Clinical ranges of the lung-cancer trial's measurements (scales' definitions, rounded)."""
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
    bounds : FeatureBounds | None
        Public bounds of the features (see the module docstring); ``None`` for
        images and interactions, which are never scaled.

    Notes
    -----
    Interaction data numbers its patients ``0 .. data.patients - 1`` over the
    whole dataset; a simulation deals out patients, not rows, and each hospital
    numbers its own (:func:`simulations.federation.build_federation`).
    """

    data: Examples
    task: Task
    sites: np.ndarray | None = None
    bounds: FeatureBounds | None = None


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
    task = Task(TaskKind.BINARY, positive_label="malignant")
    return BuiltinDataset(data=data, task=task, bounds=_bounds(BREAST_CANCER_RANGES, log=True))


def _diabetes() -> BuiltinDataset:
    """Load diabetes progression (Efron et al. 2004): 442 patients, 10 measurements.

    The target is a disease-progression score one year later (25 to 346).

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
    return BuiltinDataset(data=data, task=task, bounds=_bounds(DIABETES_RANGES))


def _lung_survival() -> BuiltinDataset:
    """Load the NCCTG advanced lung cancer trial (Loprinzi et al. 1994), from lifelines.

    Survival in days of 228 patients at 18 institutions, which become the natural sites.

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
    return BuiltinDataset(
        data=data, task=task, sites=frame["inst"].to_numpy(int), bounds=_bounds(LUNG_RANGES)
    )


def _synthetic_images() -> BuiltinDataset:
    """900 synthetic 28x28 grayscale films: normal, nodule, or diffuse opacity."""
    images, labels = make_images(
        _IMAGE_COUNT, num_classes=len(_IMAGE_CLASSES), seed=_SYNTHETIC_SEED
    )
    data = Examples(images, labels, ("gray",), InputKind.IMAGES)
    return BuiltinDataset(data=data, task=Task(TaskKind.MULTICLASS, num_classes=3))


def _synthetic_vitals() -> BuiltinDataset:
    """Generate 600 synthetic ICU stays of up to 24 hourly vitals and lactate.

    The label is deterioration, which shows in the trends more than in the levels.
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
    ranges = vital_ranges()
    bounds = _bounds(tuple(ranges[name] for name in VITAL_COLUMNS))
    task = Task(TaskKind.BINARY, positive_label="deterioration")
    return BuiltinDataset(data=data, task=task, bounds=bounds)


def _synthetic_records() -> BuiltinDataset:
    """Load 80,000 synthetic discharge records; the label is readmission within 30 days.

    Twelve routine measurements each; enough rows for federations of 1,000 hospitals.
    """
    features, labels = make_records(_RECORD_COUNT, seed=_SYNTHETIC_SEED)
    data = Examples(features=features, labels=labels, feature_names=RECORD_COLUMNS)
    ranges = record_ranges()
    bounds = _bounds(tuple(ranges[name] for name in RECORD_COLUMNS))
    task = Task(TaskKind.BINARY, positive_label="readmitted")
    return BuiltinDataset(data=data, task=task, bounds=bounds)


def _treatments() -> BuiltinDataset:
    """600 synthetic patients, each given 8 of 20 treatments, with their outcomes.

    Outcomes follow a low-rank patient-treatment affinity plus treatment popularity,
    and prescribing favours likely responders
    (:func:`simulations.synthetic_patients.make_treatments`).
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


def _bounds(ranges: tuple[tuple[float, float], ...], *, log: bool = False) -> FeatureBounds:
    low, high = np.array(ranges, dtype=np.float64).T
    return FeatureBounds(low=low, high=high, log=np.full(len(ranges), log))


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
