"""Seeded synthetic patient tables with real structure, for tests and demos.

Federated-learning code cannot be tested on patient data, and simulations here
may download nothing. Random noise would let a broken training loop look fine,
so each generator plants a signal that a working model must find and a broken
one will miss:

* :func:`make_vitals` draws hourly ICU vitals in which deterioration shows as
  *trends* over the last hours, hidden under large between-patient baseline
  variation, so per-patient means predict it much worse than per-patient slopes.
* :func:`make_treatments` draws (patient, treatment, outcome) triples from a
  low-rank latent-factor model with treatment popularity, prescribed the way
  clinicians do: more often where a response is likely.

Both name patients the same way (``P00001 ...``). Every output is a deterministic
function of the ``seed`` argument. Synthetic scans are in
:mod:`simulations.synthetic_images`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DETERIORATION_RATE = 0.35
RECOVERY_RATE = 0.3
VITAL_COLUMNS = (
    "heart_rate",
    "systolic_bp",
    "resp_rate",
    "spo2",
    "temperature",
    "lactate",
)

TREATMENT_LOGIT_SD = 2.0
TREATMENT_BIAS_SD = 1.0
# How strongly prescribing follows the expected response (0 would be random prescribing).
PRESCRIBING_FOCUS = 0.3


# --------------------------------------------------------------------------- vitals


@dataclass(frozen=True)
class _Vital:
    """How one vital sign varies: between patients, hour to hour and when deteriorating."""

    baseline: float
    between_sd: float
    frailty_sd: float
    noise_sd: float
    drift_sd: float
    deterioration: float
    low: float
    high: float
    decimals: int


# Baselines vary a lot between patients (age, chronic disease, medication), partly
# through a shared frailty that shifts every sign the way deterioration would, so a
# patient's levels say little; deterioration is a change of several noise SDs.
_VITALS = {
    "heart_rate": _Vital(84.0, 12.0, 8.0, 5.0, 1.5, 14.0, 30.0, 220.0, 0),
    "systolic_bp": _Vital(122.0, 15.0, 10.0, 7.0, 2.0, -16.0, 50.0, 240.0, 0),
    "resp_rate": _Vital(17.0, 2.5, 2.0, 1.5, 0.4, 3.5, 4.0, 60.0, 0),
    "spo2": _Vital(96.0, 1.5, 1.5, 1.2, 0.3, -3.0, 60.0, 100.0, 0),
    "temperature": _Vital(37.0, 0.4, 0.3, 0.2, 0.08, 0.6, 33.0, 42.5, 1),
    "lactate": _Vital(1.5, 0.25, 0.3, 0.18, 0.04, 1.2, 0.3, 20.0, 2),
}


def vital_ranges() -> dict[str, tuple[float, float]]:
    """Return the range each synthetic vital sign is drawn within (its public bounds)."""
    return {name: (vital.low, vital.high) for name, vital in _VITALS.items()}


@dataclass(frozen=True)
class _Course:
    """Per-patient course: padded (patients, hours) trend shapes and per-patient scales."""

    lengths: np.ndarray
    outcome: np.ndarray
    frailty: np.ndarray
    worsening: np.ndarray
    recovery: np.ndarray


def _course(rng: np.random.Generator, n: int, min_length: int, max_length: int) -> _Course:
    """Draw stay lengths, outcomes and each patient's trend shape over padded hours."""
    lengths = rng.integers(min_length, max_length + 1, n)
    outcome = (rng.random(n) < DETERIORATION_RATE).astype(np.int64)
    hours = np.arange(max_length)[None, :]
    last = (lengths - 1)[:, None]
    # Deterioration ramps up over the last few hours before the end of the record.
    duration = np.minimum(rng.uniform(4.0, 9.0, n)[:, None], last)
    ramp = np.clip((hours - (last - duration)) / duration, 0.0, 1.0) ** 1.5
    severity = rng.uniform(0.5, 1.3, n)[:, None] * outcome[:, None]
    # Some stable patients recover gently over the whole stay, the opposite direction.
    recovering = (rng.random(n) < RECOVERY_RATE) & (outcome == 0)
    recovery = 0.3 * recovering[:, None] * np.clip(hours / last, 0.0, 1.0)
    frailty = rng.normal(0.0, 1.0, n)[:, None]
    return _Course(lengths, outcome, frailty, severity * ramp, recovery)


def _vital_series(
    rng: np.random.Generator, vital: _Vital, course: _Course, max_length: int
) -> np.ndarray:
    """Draw one vital sign for every patient as a padded (patients, hours) array."""
    n = len(course.lengths)
    baseline = rng.normal(vital.baseline, vital.between_sd, n)[:, None]
    baseline += np.sign(vital.deterioration) * vital.frailty_sd * course.frailty
    # Each patient presents differently: not every sign moves equally in every patient.
    response = rng.lognormal(0.0, 0.3, n)[:, None]
    trend = vital.deterioration * response * (course.worsening - course.recovery)
    wander = np.cumsum(rng.normal(0.0, vital.drift_sd, (n, max_length)), axis=1)
    noise = rng.normal(0.0, vital.noise_sd, (n, max_length))
    series = baseline + trend + wander + noise
    return np.clip(series, vital.low, vital.high).round(vital.decimals)


def _check_vitals(n_patients: int, min_length: int, max_length: int) -> None:
    """Reject arguments :func:`make_vitals` cannot honour."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if not 2 <= min_length <= max_length:
        raise ValueError(
            f"need 2 <= min_length <= max_length, got min_length={min_length}, "
            f"max_length={max_length}"
        )


def _patient_ids(n: int) -> np.ndarray:
    """Name patients ``P00001 ...`` at equal width, so string order is numeric order."""
    width = max(5, len(str(n)))
    return np.array([f"P{i:0{width}d}" for i in range(1, n + 1)])


def make_vitals(
    n_patients: int, *, max_length: int = 24, min_length: int = 8, seed: int
) -> pd.DataFrame:
    """Draw hourly ICU vitals in which deterioration shows as trends, not levels.

    Each patient has a baseline per vital sign drawn from a wide population
    distribution, a slow random drift and measurement noise. About 35 % of
    patients deteriorate: over the last 4 to 9 hours heart rate, respiratory
    rate, temperature and lactate rise while systolic blood pressure and SpO2
    fall, by a patient-specific amount. About 30 % of the others improve slowly.
    Per-patient slopes therefore predict the outcome far better than means.

    Parameters
    ----------
    n_patients : int
        Number of patients.
    max_length : int
        Longest stay, in hourly rows.
    min_length : int
        Shortest stay, in hourly rows (at least 2).
    seed : int
        Seed of every random draw.

    Returns
    -------
    pd.DataFrame
        One row per patient-hour with columns ``patient_id`` (str, ``P00001``),
        ``hour`` (int, 0 .. length - 1), ``heart_rate``, ``systolic_bp``,
        ``resp_rate``, ``spo2``, ``temperature``, ``lactate`` (float, no missing
        values) and ``deterioration`` (int 0/1, constant per patient), sorted by
        patient then hour.

    Raises
    ------
    ValueError
        If ``n_patients < 1`` or not ``2 <= min_length <= max_length``.
    """
    _check_vitals(n_patients, min_length, max_length)
    rng = np.random.default_rng(seed)
    course = _course(rng, n_patients, min_length, max_length)
    present = np.arange(max_length)[None, :] < course.lengths[:, None]
    rows = np.nonzero(present)
    frame = {
        "patient_id": _patient_ids(n_patients)[rows[0]],
        "hour": rows[1].astype(np.int64),
    }
    for name in VITAL_COLUMNS:
        frame[name] = _vital_series(rng, _VITALS[name], course, max_length)[rows]
    frame["deterioration"] = course.outcome[rows[0]]
    return pd.DataFrame(frame)


# --------------------------------------------------------------------------- treatments


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-z))


def _response_logits(
    rng: np.random.Generator, n_patients: int, n_treatments: int, rank: int
) -> np.ndarray:
    """Logits (patients, treatments) of response: latent affinity plus popularity."""
    # Factor scale chosen so that U.V has standard deviation TREATMENT_LOGIT_SD at any rank.
    scale = np.sqrt(TREATMENT_LOGIT_SD / np.sqrt(rank))
    patients = rng.normal(0.0, scale, (n_patients, rank))
    treatments = rng.normal(0.0, scale, (n_treatments, rank))
    popularity = rng.normal(0.0, TREATMENT_BIAS_SD, n_treatments)
    return patients @ treatments.T + popularity[None, :]


def _prescribe(rng: np.random.Generator, logits: np.ndarray, per_patient: int) -> np.ndarray:
    """Pick ``per_patient`` distinct treatments per patient, favouring likely responders.

    Keeping the top ``per_patient`` of Gumbel-perturbed scores samples without
    replacement with probability proportional to ``exp(PRESCRIBING_FOCUS * logit)``,
    all patients at once.
    """
    keys = PRESCRIBING_FOCUS * logits + rng.gumbel(size=logits.shape)
    return np.sort(np.argsort(-keys, axis=1)[:, :per_patient], axis=1)


def _check_treatments(n_patients: int, n_treatments: int, per_patient: int, rank: int) -> None:
    """Reject arguments :func:`make_treatments` cannot honour."""
    if n_patients < 1 or rank < 1:
        raise ValueError(f"n_patients and rank must be at least 1, got {n_patients}, {rank}")
    if not 1 <= per_patient <= n_treatments:
        raise ValueError(
            f"need 1 <= per_patient <= n_treatments, got per_patient={per_patient}, "
            f"n_treatments={n_treatments}"
        )


def make_treatments(
    n_patients: int,
    *,
    n_treatments: int = 20,
    per_patient: int = 8,
    rank: int = 4,
    seed: int,
) -> pd.DataFrame:
    """Draw treatment outcomes from a latent-factor model, as a recommender sees them.

    Patients and treatments get ``rank``-dimensional latent factors ``U`` and
    ``V``, and each treatment a popularity bias ``b``. Each patient receives
    ``per_patient`` distinct treatments, sampled with probability rising with
    ``U.V + b`` as real prescribing favours likely responders, and responds with
    probability ``sigmoid(U.V + b)``.

    Parameters
    ----------
    n_patients : int
        Number of patients.
    n_treatments : int
        Number of distinct treatments.
    per_patient : int
        Treatments given to each patient, at most ``n_treatments``.
    rank : int
        Dimension of the latent factors.
    seed : int
        Seed of every random draw.

    Returns
    -------
    pd.DataFrame
        ``n_patients * per_patient`` rows with columns ``patient_id`` (str,
        ``P00001``), ``treatment`` (str, ``T01``) and ``outcome`` (int, 1 for a
        response), sorted by patient then treatment.

    Raises
    ------
    ValueError
        If a count is below 1 or ``per_patient > n_treatments``.
    """
    _check_treatments(n_patients, n_treatments, per_patient, rank)
    rng = np.random.default_rng(seed)
    logits = _response_logits(rng, n_patients, n_treatments, rank)
    given = _prescribe(rng, logits, per_patient)
    patient = np.repeat(np.arange(n_patients), per_patient)
    treatment = given.ravel()
    outcome = rng.random(patient.size) < _sigmoid(logits[patient, treatment])
    width = max(2, len(str(n_treatments)))
    names = np.array([f"T{i:0{width}d}" for i in range(1, n_treatments + 1)])
    return pd.DataFrame(
        {
            "patient_id": _patient_ids(n_patients)[patient],
            "treatment": names[treatment],
            "outcome": outcome.astype(np.int64),
        }
    )
