"""Missing values as real data has them: contract fields, readers, fill values and their privacy.

The headline check: a model trained on data with 80 % of its values unobserved,
filled and masked as the contract says, beats one trained on the same data with
every incomplete observation dropped (the only choice before), for a table and
for ICU-style sequences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

from fedcare.client.budget import check_budget, privacy_plan
from fedcare.client.fill_values import BookingPlace, hospital_fills, run_releases
from fedcare.client.ledger import PrivacyLedger, ledger_path
from fedcare.client.readers import read_site_data
from fedcare.client.readers.problems import Rule
from fedcare.client.readers.table import DataValidationError
from fedcare.client.site import contract_site
from fedcare.client.state_files import FILLS_DIR
from fedcare.client.training import train_plain
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName
from fedcare.shared.contract import DataContract, FillStatistic, MissingPolicy
from fedcare.shared.data import Examples, Standardizer
from fedcare.shared.imputation import (
    FILL_EPSILON_SHARE,
    dp_fill_features,
    dp_means,
    exact_means,
    fill_noise_multiplier,
)
from fedcare.shared.models import build_model
from fedcare.shared.privacy import epsilon_spent
from fedcare.simulations.synthetic_patients import make_vitals
from tests.contracts import TABLE_CONTRACT, assert_refused_by_field, edit, parse_contract

IMPUTED = TABLE_CONTRACT.replace(
    """[features.radius]
type = "float"
min = 0.0
max = 50.0
""",
    """[features.radius]
type = "float"
min = 0.0
max = 50.0
missing = "impute"
fill = "dp-mean"
indicator = true
""",
).replace(
    """categories = ["F", "M"]
""",
    """categories = ["F", "M"]
missing = "impute"
indicator = true
""",
)

SEQUENCES = """
name = "icu"
format = "sequences"
task = "binary"
label = "deterioration"
classes = ["0", "1"]
positive_class = "1"
min_rows = 1
min_rows_per_class = 1
missing = "forward-fill"

[sequences]
id_column = "patient_id"
time_column = "hour"
max_length = 12
min_length = 1

[features.heart_rate]
type = "float"
min = 0.0
max = 300.0
fill = 85.0

[features.lactate]
type = "float"
min = 0.0
max = 30.0
fill = "dp-mean"
"""


def _config(**flat: object) -> RunConfig:
    return RunConfig.from_flat({"device": "cpu", "num-server-rounds": 3, **flat})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- the contract


def test_a_contract_without_the_new_fields_keeps_its_fingerprint() -> None:
    # The value the table contract had before missing values and class scopes existed.
    assert parse_contract().fingerprint() == (
        "15f3156a4921b49791f428c15b9a06716a692af1aba167457ab9da6e59c07ca7"
    )
    assert parse_contract(IMPUTED).fingerprint() != parse_contract().fingerprint()


def test_imputed_features_add_their_indicator_inputs() -> None:
    contract = parse_contract(IMPUTED)
    assert contract.feature_names() == (
        "age",
        "radius",
        "radius_missing",
        "sex=F",
        "sex=M",
        "sex_missing",
    )
    radius = contract.features[1]
    assert radius.missing is MissingPolicy.IMPUTE and radius.fill is FillStatistic.DP_MEAN
    assert contract.features[0].missing is MissingPolicy.REJECT
    assert contract.fills() == {"radius": FillStatistic.DP_MEAN}


def test_forward_fill_adds_mask_and_time_since_channels() -> None:
    contract = parse_contract(SEQUENCES)
    assert contract.feature_names() == (
        "heart_rate",
        "lactate",
        "heart_rate_observed",
        "lactate_observed",
        "heart_rate_since_observed",
        "lactate_since_observed",
        "observed",
    )
    assert contract.input_shape() == (12, 7)
    assert contract.sequence_spec().forward_fill


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('fill = "dp-mean"\n', "", "features.radius.fill"),
        ("min = 0.0\nmax = 50.0\nmissing", "missing", "features.radius.fill"),
        ('fill = "dp-mean"', "fill = 99.0", "features.radius.fill"),
        ('fill = "dp-mean"', 'fill = "median"', "features.radius.fill"),
        ('missing = "impute"\nfill', 'missing = "reject"\nfill', "features.radius.fill"),
        (
            'missing = "impute"\nindicator',
            'missing = "impute"\nfill = 1.0\nindicator',
            "features.sex.fill",
        ),
        ('missing = "impute"\nfill', 'missing = "sometimes"\nfill', "features.radius.missing"),
    ],
    ids=[
        "fill-required",
        "dp-mean-needs-a-range",
        "fill-outside-range",
        "unknown-statistic",
        "fill-without-impute",
        "category-takes-no-fill",
        "unknown-policy",
    ],
)
def test_inconsistent_missing_value_fields_are_refused_by_field(
    old: str, new: str, field: str
) -> None:
    assert_refused_by_field(edit(IMPUTED, old, new), field)


def test_an_indicator_that_collides_with_a_column_is_refused() -> None:
    text = IMPUTED + '\n[features.radius_missing]\ntype = "int"\n'
    assert_refused_by_field(text, "features")


def test_sequence_forward_fill_needs_every_fill_and_no_table_policy() -> None:
    assert_refused_by_field(edit(SEQUENCES, "fill = 85.0\n", ""), "features.heart_rate.fill")
    assert_refused_by_field(edit(SEQUENCES, '"forward-fill"', '"impute"'), "missing")
    assert_refused_by_field(
        edit(SEQUENCES, "fill = 85.0", 'fill = 85.0\nmissing = "impute"'),
        "features.heart_rate.missing",
    )


# --------------------------------------------------------------------------- the readers


def _table(tmp_path: Path, rows: list[str], name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_text("patient_id,age,radius,sex,diagnosis\n" + "\n".join(rows) + "\n")
    return path


ROWS = [
    "p0,40,10.5,F,benign",
    "p1,51,,M,malignant",
    "p2,62,20.25,,malignant",
    "p3,33,NA,F,benign",
    "p4,70,15.5,M,malignant",
    "p5,45,11.0,null,benign",
]


def test_imputed_cells_are_read_as_gaps_with_their_indicators(tmp_path: Path) -> None:
    data = read_site_data(_table(tmp_path, ROWS), parse_contract(IMPUTED))
    radius, radius_missing = data.features[:, 1], data.features[:, 2]
    assert np.isnan(radius).tolist() == [False, True, False, True, False, False]
    assert radius_missing.tolist() == [0, 1, 0, 1, 0, 0]
    # An empty category is no category, flagged by its indicator.
    assert data.features[:, 3:5].sum(axis=1).tolist() == [1, 1, 0, 1, 1, 0]
    assert data.features[:, 5].tolist() == [0, 0, 1, 0, 0, 1]


def test_a_rejecting_feature_still_refuses_its_empty_cells(tmp_path: Path) -> None:
    rows = [*ROWS[:5], "p5,,11.0,M,benign"]
    with pytest.raises(DataValidationError) as caught:
        read_site_data(_table(tmp_path, rows), parse_contract(IMPUTED))
    assert [(p.column, p.rule) for p in caught.value.problems] == [("age", Rule.MISSING_VALUE)]


def test_forward_fill_carries_values_and_times_within_a_stay(tmp_path: Path) -> None:
    path = tmp_path / "stays.csv"
    path.write_text(
        "patient_id,hour,heart_rate,lactate,deterioration\n"
        "a,0,,2.0,1\na,1,90,,1\na,2,,,1\na,5,80,,1\n"
        "b,0,70,,0\nb,1,,,0\n"
    )
    data = read_site_data(path, parse_contract(SEQUENCES))
    a, b = data.features[0], data.features[1]  # 12 steps, left-padded
    assert np.isnan(a[-4, 0]) and a[-4:, 0][1:].tolist() == [90.0, 90.0, 80.0]
    assert a[-4:, 1].tolist() == [2.0, 2.0, 2.0, 2.0]  # lactate carried forward
    assert a[-4:, 2].tolist() == [0, 1, 0, 1] and a[-4:, 3].tolist() == [1, 0, 0, 0]
    # Steps since heart rate was seen: 1 before the first (counted from the stay's start),
    # 0 at an observation, 1 an hour later, 0 at hour 5; over max_length (12).
    assert np.allclose(a[-4:, 4] * 12, [1, 0, 1, 0])
    assert np.allclose(a[-4:, 5] * 12, [0, 1, 2, 5])
    assert np.isnan(b[-2:, 1]).all() and b[-2:, 0].tolist() == [70.0, 70.0]
    assert (a[:-4] == 0).all() and a[-4:, -1].tolist() == [1, 1, 1, 1]


# ------------------------------------------------------------------------ fill values and privacy


def _imputed_rows(tmp_path: Path, n: int = 60) -> tuple[Examples, DataContract]:
    rng = np.random.default_rng(0)
    rows = [
        f"p{i},{rng.integers(20, 90)},{'' if i % 3 == 0 else round(rng.uniform(5, 30), 2)},"
        f"{'F' if i % 2 else 'M'},{'malignant' if i % 4 == 0 else 'benign'}"
        for i in range(n)
    ]
    contract = parse_contract(IMPUTED)
    return read_site_data(_table(tmp_path, rows), contract), contract


def test_a_dp_fill_is_booked_once_per_run_before_use(tmp_path: Path) -> None:
    data, contract = _imputed_rows(tmp_path)
    config = _config()
    state = tmp_path / "state"
    place = BookingPlace(state=state, ledger_key="d", label="d", run_id="run-1")
    fills = hospital_fills(contract, config, place, cap_epsilon=3.0)
    first, again = fills(data), fills(data)
    assert first == again and 0.0 <= first["radius"] <= 50.0
    with PrivacyLedger(ledger_path(state)) as ledger:
        entries = ledger.history("d")
    noise = fill_noise_multiplier(3.0, 1e-5)
    assert [
        (e.run_id, e.server_round, e.noise_multiplier, e.sample_rate, e.steps) for e in entries
    ] == [("run-1", 0, noise, 1.0, 1)]
    stored = state / FILLS_DIR / "run-run-1.json"
    assert json.loads(stored.read_text()) == first and stored.stat().st_mode & 0o077 == 0
    # Alone, the fill costs its share of the run's epsilon.
    assert epsilon_spent([entries[0].history_entry()], delta=1e-5) <= FILL_EPSILON_SHARE * 3.0


def test_without_dp_the_exact_mean_fills_and_nothing_is_booked(tmp_path: Path) -> None:
    data, contract = _imputed_rows(tmp_path)
    config = _config(**{"differential-privacy": False})
    place = BookingPlace(state=tmp_path / "s", ledger_key="d", label="d", run_id="r")
    fills = hospital_fills(contract, config, place, cap_epsilon=3.0)
    observed = data.features[:, 1][~np.isnan(data.features[:, 1])]
    assert fills(data)["radius"] == pytest.approx(float(observed.mean()))
    assert not ledger_path(tmp_path / "s").exists()
    assert run_releases(contract, config) == ()


def test_the_run_plans_room_for_its_fill_and_trains_every_round(tmp_path: Path) -> None:
    data, contract = _imputed_rows(tmp_path, n=200)
    config = _config()
    site = contract_site(
        "h", data, contract, config, state=tmp_path / "state", dataset="d", run_id="run-1"
    )
    assert site.reserved == run_releases(contract, config) and len(site.reserved) == 1
    assert not np.isnan(site.data.train.features).any()
    plan = privacy_plan(config, site)
    history = [*site.reserved]
    for _ in range(config.federation.rounds):
        check_budget(plan, history, site="h")  # never refused: the fill was planned for
        history.append(plan.round_entry())
    assert epsilon_spent(history, delta=1e-5) <= config.privacy.target_epsilon


def test_the_dp_mean_moves_by_the_noise_it_claims() -> None:
    contract = parse_contract(IMPUTED)
    features = dp_fill_features(contract.features)
    values = np.full((400, 6), np.nan, dtype=np.float32)
    values[:200, 1] = 20.0
    data = Examples(values, np.zeros(400, np.float32), contract.feature_names())
    assert exact_means(data, features) == {"radius": 20.0}
    draws = [
        dp_means(data, features, noise_multiplier=2.0, rng=np.random.default_rng(seed))["radius"]
        for seed in range(300)
    ]
    # Sums and counts each get N(0, (2 sqrt(2))^2) in units of the half-range (25):
    # the mean's spread is close to 25 * 2 sqrt(2) * sqrt(1 + 0.04^2) / 200.
    assert np.mean(draws) == pytest.approx(20.0, abs=0.1)
    assert np.std(draws) == pytest.approx(25 * 2 * np.sqrt(2) / 200, rel=0.15)


def test_one_patient_moves_the_fill_query_by_at_most_its_sensitivity() -> None:
    """The attacker's lever: the most one added patient changes the (noise-free) query."""
    contract = parse_contract(IMPUTED)
    features = dp_fill_features(contract.features)
    base = np.full((50, 6), np.nan, dtype=np.float32)
    base[:, 1] = np.linspace(0, 50, 50)
    extreme = np.vstack([base, np.full((1, 6), 1e9, dtype=np.float32)])
    labels = np.zeros(51, np.float32)
    before = exact_means(Examples(base, labels[:50], contract.feature_names()), features)
    after = exact_means(Examples(extreme, labels, contract.feature_names()), features)
    # A value far outside the range is clipped to it: the mean moves by at most one
    # half-range over the count, never by the value itself.
    assert abs(after["radius"] - before["radius"]) <= 25.0 * 2 / 50


# --------------------------------------------------------------------------- 80 % unobserved


def _auroc(model: torch.nn.Module, data: Examples) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(data.features)).squeeze(-1).numpy()


def _read_csv(path: Path, rows: pd.DataFrame, contract: DataContract) -> Examples:
    """Write ``rows`` to ``path`` and read them back as a hospital would."""
    rows.to_csv(path, index=False)
    return read_site_data(path, contract)


def _trained(train: Examples, test: Examples, contract: DataContract) -> np.ndarray:
    """Fit a logistic model on ``train`` (scaled with its own statistics) and score ``test``."""
    scaler = Standardizer.fit(train)
    train, test = scaler.transform(train), scaler.transform(test)
    task = contract.task()
    model = build_model(
        ModelName.LOGREG, input_shape=train.input_shape, input_kind=train.kind, task=task, seed=0
    )
    train_plain(
        model,
        train,
        task,
        learning_rate=0.5,
        epochs=20,
        batch_size=32,
        seed=0,
        device=torch.device("cpu"),
    )
    return _auroc(model, test)


def _scores_by_id(ids: list[str], scored_ids: list[str], scores: np.ndarray) -> np.ndarray:
    """Scores for every id; an id the model could not see (no complete observation) scores 0."""
    by_id = dict(zip(scored_ids, scores, strict=True))
    return np.array([by_id.get(name, 0.0) for name in ids])


def test_sequences_with_80_percent_unobserved_beat_dropping_observations(tmp_path: Path) -> None:
    features = ["heart_rate", "lactate"]
    frame = make_vitals(800, max_length=12, min_length=8, seed=7)
    frame = frame[["patient_id", "hour", *features, "deterioration"]]
    rng = np.random.default_rng(1)
    for name in features:
        frame.loc[rng.random(len(frame)) < 0.8, name] = np.nan
    ids = sorted(frame["patient_id"].unique())
    test_ids = sorted(rng.choice(ids, size=250, replace=False).tolist())
    is_test = frame["patient_id"].isin(test_ids)
    filled = edit(SEQUENCES, 'fill = "dp-mean"', "fill = 1.5")
    masked = parse_contract(filled)
    dropped = parse_contract(
        edit(filled, '"forward-fill"', '"reject"')
        .replace("fill = 85.0\n", "")
        .replace("fill = 1.5\n", "")
    )
    fills = {"heart_rate": 85.0, "lactate": 1.5}

    with_masks = _trained(
        _read_csv(tmp_path / "a.csv", frame[~is_test], masked).filled(fills),
        _read_csv(tmp_path / "b.csv", frame[is_test], masked).filled(fills),
        masked,
    )
    complete = frame.dropna(subset=features)
    complete_test = complete["patient_id"].isin(test_ids)
    without = _trained(
        _read_csv(tmp_path / "c.csv", complete[~complete_test], dropped),
        _read_csv(tmp_path / "d.csv", complete[complete_test], dropped),
        dropped,
    )
    labels = frame[is_test].groupby("patient_id")["deterioration"].first().loc[test_ids]
    seen = sorted(complete.loc[complete_test, "patient_id"].unique())
    auroc_masks = roc_auc_score(labels, with_masks)
    auroc_dropped = roc_auc_score(labels, _scores_by_id(test_ids, seen, without))
    print(
        f"80% unobserved sequences: AUROC {auroc_masks:.3f} with masks, {auroc_dropped:.3f} dropped"
    )
    assert frame[features].isna().mean().mean() == pytest.approx(0.8, abs=0.02)
    assert auroc_masks > auroc_dropped + 0.1


CANCER_CONTRACT = """
name = "cancer"
task = "binary"
label = "diagnosis"
classes = ["benign", "malignant"]
positive_class = "malignant"
min_rows = 1
min_rows_per_class = 1
missing = "MISSING"

[features.concave]
type = "float"
min = 0.0
max = 0.3
FILL_CONCAVE
[features.radius]
type = "float"
min = 0.0
max = 50.0
FILL_RADIUS
"""


def test_a_table_with_80_percent_unobserved_beats_dropping_rows(tmp_path: Path) -> None:
    cancer = load_breast_cancer(as_frame=True)
    names = {"mean concave points": "concave", "worst radius": "radius"}
    frame = cancer.frame[[*names, "target"]].rename(columns=names)
    frame["diagnosis"] = np.where(frame.pop("target") == 0, "malignant", "benign")
    rng = np.random.default_rng(2)
    for column in names.values():
        frame.loc[rng.random(len(frame)) < 0.8, column] = np.nan
    is_test = rng.random(len(frame)) < 0.3
    imputed = parse_contract(
        CANCER_CONTRACT.replace("MISSING", "impute")
        .replace("FILL_CONCAVE", "fill = 0.05\nindicator = true")
        .replace("FILL_RADIUS", "fill = 16.0\nindicator = true")
    )
    dropping = parse_contract(
        CANCER_CONTRACT.replace("MISSING", "drop-rows")
        .replace("FILL_CONCAVE", "")
        .replace("FILL_RADIUS", "")
    )

    fills = {"concave": 0.05, "radius": 16.0}
    with_fills = _trained(
        _read_csv(tmp_path / "a.csv", frame[~is_test], imputed).filled(fills),
        _read_csv(tmp_path / "b.csv", frame[is_test], imputed).filled(fills),
        imputed,
    )
    complete = frame[is_test].notna().all(axis=1).to_numpy()
    only_complete = _trained(
        _read_csv(tmp_path / "c.csv", frame[~is_test], dropping),
        _read_csv(tmp_path / "d.csv", frame[is_test], dropping),
        dropping,
    )
    without = np.zeros(int(is_test.sum()))
    without[complete] = only_complete
    labels = (frame.loc[is_test, "diagnosis"] == "malignant").to_numpy()
    auroc_fills, auroc_dropped = roc_auc_score(labels, with_fills), roc_auc_score(labels, without)
    print(
        f"80% unobserved table: AUROC {auroc_fills:.3f} imputed, {auroc_dropped:.3f} rows dropped"
    )
    assert auroc_fills > auroc_dropped + 0.1


def test_model_use_refuses_a_run_whose_contract_fills_empty_cells(tmp_path: Path) -> None:
    from fedcare.client.model_use.trained_model import ModelUseError, load_trained_model

    config = RunConfig.from_flat({"contract": IMPUTED, "device": "cpu"})
    (tmp_path / "config.json").write_text(json.dumps(config.to_flat()))
    with pytest.raises(ModelUseError, match="fills empty cells"):
        load_trained_model(tmp_path)
