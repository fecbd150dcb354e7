"""Synthetic generators: seeded, well-formed, and carrying the signal they promise."""

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedcare.simulations.synthetic_images import make_images
from fedcare.simulations.synthetic_patients import VITAL_COLUMNS, make_treatments, make_vitals

# Plausible adult ICU ranges; the generator clips inside them.
VITAL_RANGES = {
    "heart_rate": (30, 220),
    "systolic_bp": (50, 240),
    "resp_rate": (4, 60),
    "spo2": (60, 100),
    "temperature": (33, 42.5),
    "lactate": (0.3, 20),
}


# --------------------------------------------------------------------------- images


def test_images_same_seed_same_output_other_seed_other() -> None:
    images, labels = make_images(50, seed=3)
    again_images, again_labels = make_images(50, seed=3)
    other_images, _ = make_images(50, seed=4)
    assert np.array_equal(images, again_images)
    assert np.array_equal(labels, again_labels)
    assert not np.array_equal(images, other_images)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 28), (1, 64), (3, 128)])
def test_images_shape_dtype_and_range(channels: int, size: int) -> None:
    images, labels = make_images(12, num_classes=6, channels=channels, size=size, seed=0)
    assert images.shape == (12, channels, size, size)
    assert images.dtype == np.float32
    assert labels.shape == (12,)
    assert labels.dtype == np.int64
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert np.isfinite(images).all()


@pytest.mark.parametrize("num_classes", [2, 3, 4, 5, 6])
def test_image_classes_are_balanced(num_classes: int) -> None:
    _, labels = make_images(101, num_classes=num_classes, seed=1)
    counts = np.bincount(labels, minlength=num_classes)
    assert len(counts) == num_classes
    assert counts.max() - counts.min() <= 1


def test_colour_images_have_distinct_channels() -> None:
    images, _ = make_images(40, channels=3, seed=2)
    red, green, blue = (images[:, c].mean() for c in range(3))
    assert red > green > blue
    assert not np.allclose(images[:, 0], images[:, 1])


def test_image_findings_differ_from_normal() -> None:
    images, labels = make_images(600, num_classes=6, seed=5)
    brightest = images.reshape(len(images), -1).max(axis=1)
    normal = brightest[labels == 0].mean()
    for finding in range(1, 6):
        assert brightest[labels == finding].mean() > normal + 0.1


def test_images_are_learnable_by_logistic_regression() -> None:
    images, labels = make_images(900, num_classes=3, seed=0)
    flat = images.reshape(len(images), -1)
    # Centring the pixels lets the solver converge in a few dozen iterations.
    model = make_pipeline(StandardScaler(with_std=False), LogisticRegression(C=0.1))
    model.fit(flat[:600], labels[:600])
    assert model.score(flat[600:], labels[600:]) > 0.7


def test_thousand_small_images_are_fast() -> None:
    start = time.perf_counter()
    make_images(1000, seed=0)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 5, "num_classes": 1},
        {"n": 5, "num_classes": 7},
        {"n": 5, "channels": 0},
        {"n": 5, "size": 8},
    ],
)
def test_images_reject_impossible_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_images(**kwargs, seed=0)


# --------------------------------------------------------------------------- vitals


def _per_patient_features(vitals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares slope over hours, mean of each vital, and outcome, per patient."""
    columns = list(VITAL_COLUMNS)
    patient = vitals["patient_id"]
    grouped = vitals.groupby(patient, sort=True)
    hour = vitals["hour"] - grouped["hour"].transform("mean")
    centred = vitals[columns] - grouped[columns].transform("mean")
    covariance = centred.mul(hour, axis=0).groupby(patient, sort=True).sum()
    slopes = covariance.div((hour**2).groupby(patient, sort=True).sum(), axis=0)
    means = grouped[columns].mean()
    outcome = grouped["deterioration"].first()
    return slopes.to_numpy(), means.to_numpy(), outcome.to_numpy()


def _cross_validated_auroc(features: np.ndarray, outcome: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, outcome, cv=folds, scoring="roc_auc").mean())


def test_vitals_same_seed_same_output_other_seed_other() -> None:
    first = make_vitals(30, seed=11)
    pd.testing.assert_frame_equal(first, make_vitals(30, seed=11))
    assert not first.equals(make_vitals(30, seed=12))


def test_vitals_columns_lengths_and_order() -> None:
    vitals = make_vitals(200, min_length=6, max_length=20, seed=0)
    expected = ["patient_id", "hour", *VITAL_COLUMNS, "deterioration"]
    assert list(vitals.columns) == expected
    assert vitals["patient_id"].nunique() == 200
    assert vitals["patient_id"].iloc[0] == "P00001"
    assert vitals["patient_id"].str.fullmatch(r"P\d{5}").all()
    lengths = vitals.groupby("patient_id").size()
    assert lengths.between(6, 20).all()
    assert lengths.nunique() > 5
    # Hours run 0 .. length - 1 within each patient, which also proves the sort order.
    assert vitals.equals(vitals.sort_values(["patient_id", "hour"]).reset_index(drop=True))
    within = vitals.groupby("patient_id").cumcount()
    assert np.array_equal(vitals["hour"].to_numpy(), within.to_numpy())
    assert vitals["hour"].dtype == np.int64


def test_vitals_values_complete_and_plausible() -> None:
    vitals = make_vitals(300, seed=1)
    assert not vitals.isna().any().any()
    for column, (low, high) in VITAL_RANGES.items():
        assert vitals[column].dtype == np.float64
        assert vitals[column].between(low, high).all(), column
    assert 70 < vitals["heart_rate"].median() < 100
    assert 110 < vitals["systolic_bp"].median() < 135
    assert 36.5 < vitals["temperature"].median() < 37.5


def test_deterioration_is_constant_per_patient_and_about_a_third() -> None:
    vitals = make_vitals(1000, seed=2)
    assert set(vitals["deterioration"].unique()) <= {0, 1}
    assert vitals.groupby("patient_id")["deterioration"].nunique().eq(1).all()
    positives = vitals.groupby("patient_id")["deterioration"].first().mean()
    assert 0.28 < positives < 0.42


def test_deterioration_is_told_by_trends_more_than_levels() -> None:
    slopes, means, outcome = _per_patient_features(make_vitals(500, seed=0))
    slope_auroc = _cross_validated_auroc(slopes, outcome)
    mean_auroc = _cross_validated_auroc(means, outcome)
    assert slope_auroc > 0.75
    assert slope_auroc > mean_auroc + 0.1


@pytest.mark.parametrize(
    "kwargs",
    [{"n_patients": 0}, {"n_patients": 5, "min_length": 1}, {"n_patients": 5, "min_length": 30}],
)
def test_vitals_reject_impossible_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_vitals(**kwargs, seed=0)


# --------------------------------------------------------------------------- treatments


def _held_out_aurocs(treatments: pd.DataFrame) -> tuple[float, float]:
    """AUROC on one held-out treatment per patient: popularity alone, and item-based kNN.

    The kNN predicts the treatment's response rate plus the patient's residuals on
    other treatments, weighted by how their residuals correlate across patients;
    it can only beat popularity if outcomes share latent structure.
    """
    matrix = treatments.pivot(index="patient_id", columns="treatment", values="outcome")
    outcomes = matrix.to_numpy(dtype=float)
    rng = np.random.default_rng(0)
    held = np.array([rng.choice(np.flatnonzero(~np.isnan(row))) for row in outcomes])
    patients = np.arange(len(outcomes))
    truth = outcomes[patients, held]
    train = outcomes.copy()
    train[patients, held] = np.nan
    popularity = np.nanmean(train, axis=0)
    observed = ~np.isnan(train)
    residual = np.where(observed, train - popularity, 0.0)
    spread = (residual**2).T @ observed
    similarity = (residual.T @ residual) / np.sqrt(spread * spread.T + 1e-9)
    np.fill_diagonal(similarity, 0.0)
    weights = similarity[held] * observed
    personal = (weights * residual).sum(axis=1) / (np.abs(weights).sum(axis=1) + 1e-9)
    return (
        roc_auc_score(truth, popularity[held]),
        roc_auc_score(truth, popularity[held] + personal),
    )


def test_treatments_same_seed_same_output_other_seed_other() -> None:
    first = make_treatments(40, seed=5)
    pd.testing.assert_frame_equal(first, make_treatments(40, seed=5))
    assert not first.equals(make_treatments(40, seed=6))


def test_treatments_columns_and_order() -> None:
    treatments = make_treatments(100, n_treatments=12, per_patient=5, seed=0)
    assert list(treatments.columns) == ["patient_id", "treatment", "outcome"]
    assert len(treatments) == 500
    assert treatments["treatment"].str.fullmatch(r"T\d{2}").all()
    assert set(treatments["treatment"]) <= {f"T{i:02d}" for i in range(1, 13)}
    assert treatments["outcome"].dtype == np.int64
    assert set(treatments["outcome"].unique()) == {0, 1}
    per_patient = treatments.groupby("patient_id")["treatment"]
    assert per_patient.nunique().eq(5).all()
    ordered = treatments.sort_values(["patient_id", "treatment"]).reset_index(drop=True)
    assert treatments.equals(ordered)


def test_treatments_differ_in_popularity_and_response() -> None:
    treatments = make_treatments(1000, seed=1)
    per_treatment = treatments.groupby("treatment")["outcome"].agg(["mean", "size"])
    assert per_treatment["mean"].max() - per_treatment["mean"].min() > 0.3
    # Prescribers favour treatments that work, so the busiest ones respond more often.
    assert per_treatment["mean"].corr(per_treatment["size"], method="spearman") > 0.3


def test_treatment_outcomes_share_latent_structure() -> None:
    popularity_auroc, knn_auroc = _held_out_aurocs(make_treatments(1000, seed=0))
    assert popularity_auroc > 0.55
    assert knn_auroc > 0.6
    assert knn_auroc > popularity_auroc + 0.02


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_patients": 0},
        {"n_patients": 5, "rank": 0},
        {"n_patients": 5, "per_patient": 0},
        {"n_patients": 5, "n_treatments": 4, "per_patient": 5},
    ],
)
def test_treatments_reject_impossible_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_treatments(**kwargs, seed=0)
