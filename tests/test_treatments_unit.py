"""Treatment recommendation, piece by piece: the leave-one-out split, the ranking metrics,
the hospitals' own patients, and patient embeddings that never leave a hospital."""

import math
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcare.client.evaluation_round import evaluate_round
from fedcare.client.hospital import fresh_model, train_round
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.local_parameters import local_parameters_path
from fedcare.client.site import Site
from fedcare.shared.config.data import PartitionName
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName
from fedcare.shared.contract import ContractError, DataContract
from fedcare.shared.data import Examples, InputKind, Standardizer, prepare_site, split_interactions
from fedcare.shared.errors import ConfigError, DataError
from fedcare.shared.evaluation import candidate_scores, evaluate_model
from fedcare.shared.metrics import compute_metrics, held_out_ranks, metric_names
from fedcare.shared.models import build_model, check_model_input
from fedcare.shared.serialization import (
    LOCAL_PREFIX,
    ModelLayout,
    get_local_weights,
    get_weights,
    save_safetensors,
    set_weights,
)
from fedcare.shared.tasks import Task, TaskKind
from fedcare.simulations.federation import SimulatedFederation, build_federation
from fedcare.simulations.scenarios import scenario_overrides

RECOMMENDATION = Task(TaskKind.RECOMMENDATION)
TREATMENTS = tuple(f"T{i:02d}" for i in range(1, 9))


def _interactions(pairs: list[tuple[int, int, int]], patients: int) -> Examples:
    features = np.array([(p, t) for p, t, _ in pairs], dtype=np.int64)
    labels = np.array([o for _, _, o in pairs], dtype=np.float32)
    return Examples(features, labels, TREATMENTS, InputKind.INTERACTIONS, patients=patients)


@pytest.fixture(scope="module")
def treatments_config() -> RunConfig:
    return RunConfig.from_flat(
        {**scenario_overrides("treatments"), "num-server-rounds": 2, "device": "cpu"}
    )


@pytest.fixture(scope="module")
def federation(treatments_config: RunConfig) -> SimulatedFederation:
    return build_federation(treatments_config.data)


def _site(federation: SimulatedFederation, state: Path) -> Site:
    hospital = federation.hospitals[0]
    return Site(
        name=hospital.name,
        task=federation.task,
        data=hospital.site,
        state=state,
        dataset=hospital.name,
    )


# --- the split


def test_leave_one_out_holds_out_one_response_per_eligible_patient() -> None:
    data = _interactions(
        [
            # patient 0: one of its two responses is held out
            (0, 0, 1),
            (0, 1, 0),
            (0, 2, 1),
            # patient 1: no response, so nothing to rank; all of it trains
            (1, 3, 0),
            (1, 4, 0),
            # patient 2: a single interaction, which must train
            (2, 5, 1),
            # patient 3: its one response is held out
            (3, 6, 1),
            (3, 7, 0),
        ],
        patients=4,
    )
    kept, held = split_interactions(data, np.random.default_rng(0))
    assert sorted([*kept, *held]) == list(range(len(data)))
    held_patients = data.features[held, 0]
    assert sorted(held_patients) == [0, 3]
    assert np.all(data.labels[held] == 1)
    assert set(data.features[kept, 0]) == {0, 1, 2, 3}  # nobody is left without training rows


def test_prepared_interactions_stay_indices_with_their_patient_range() -> None:
    rng = np.random.default_rng(1)
    pairs = [(p, int(t), int(rng.integers(0, 2)) | (t == 0)) for p in range(12) for t in range(4)]
    data = _interactions(pairs, patients=12)
    scaler = Standardizer.from_bounds(None, data.kind)
    prepared = prepare_site(
        data, RECOMMENDATION, scaler=scaler, eval_fraction=0.2, seed=3, site="h"
    )
    train, evaluation = prepared.train, prepared.evaluation
    assert train.features.dtype == np.int64
    assert set(map(tuple, train.features)) <= set(map(tuple, data.features))
    assert train.input_shape == evaluation.input_shape == (12, len(TREATMENTS))
    assert train.shared_input_shape == (1, len(TREATMENTS))
    assert len(evaluation) == 12 and Standardizer.fit(train).transform(train) is train


def test_a_hospital_with_too_few_interactions_is_refused_by_name() -> None:
    data = _interactions([(0, 0, 1), (0, 1, 1), (1, 2, 0)], patients=2)
    with pytest.raises(DataError, match="tiny: 3 rows give 2 to train and 1 to evaluate"):
        prepare_site(
            data,
            RECOMMENDATION,
            scaler=Standardizer.from_bounds(None, data.kind),
            eval_fraction=0.2,
            seed=0,
            site="tiny",
        )


# --- the metrics


def test_a_perfect_ranking_scores_one_and_the_worst_zero() -> None:
    held_out = np.array([2, 0, 5])
    perfect = np.tile(np.arange(8, dtype=float), (3, 1))
    perfect[np.arange(3), held_out] = 100.0
    assert compute_metrics(RECOMMENDATION, held_out, perfect) == {"hit-rate": 1.0, "ndcg": 1.0}
    worst = np.tile(np.arange(8, dtype=float), (3, 1))
    worst[np.arange(3), held_out] = -100.0
    assert compute_metrics(RECOMMENDATION, held_out, worst) == {"hit-rate": 0.0, "ndcg": 0.0}
    assert list(metric_names(RECOMMENDATION)) == ["hit-rate", "ndcg"]


def test_ndcg_discounts_by_rank_and_ties_count_against_the_held_out_treatment() -> None:
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0]])  # held-out 2 ranks third
    result = compute_metrics(RECOMMENDATION, np.array([2]), scores)
    assert result == {"hit-rate": 1.0, "ndcg": pytest.approx(1 / math.log2(4))}
    flat = np.zeros((1, 7))
    assert list(held_out_ranks(flat, np.array([3]))) == [7]  # a constant scorer earns nothing
    assert compute_metrics(RECOMMENDATION, np.array([3]), flat)["hit-rate"] == 0.0


def test_only_candidates_are_ranked_and_a_diverged_model_scores_nan() -> None:
    scores = np.array([[9.0, -np.inf, -np.inf, 1.0, -np.inf, -np.inf, -np.inf, -np.inf]])
    assert list(held_out_ranks(scores, np.array([3]))) == [2]
    diverged = np.full((1, 8), np.nan)
    assert all(
        math.isnan(v) for v in compute_metrics(RECOMMENDATION, np.array([0]), diverged).values()
    )


class _Fixed(torch.nn.Module):
    """Scores a (patient, treatment) pair by a fixed table, whatever the patient."""

    def __init__(self, by_treatment: list[float]) -> None:
        super().__init__()
        self.table = torch.tensor(by_treatment)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.table[pairs[:, 1]].unsqueeze(-1)


def test_treatments_already_tried_are_no_candidates() -> None:
    known = _interactions([(0, 7, 1), (0, 6, 0), (1, 0, 1)], patients=2)
    evaluation = _interactions([(0, 5, 1), (1, 5, 1)], patients=2)
    # Patient 0 already had the two best-scored treatments: the held-out one is then the best
    # candidate. Patient 1 did not, so they still outrank it.
    model = _Fixed([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    scores = candidate_scores(model, evaluation, known, torch.device("cpu"))
    assert np.isneginf(scores[0, [6, 7]]).all() and np.isneginf(scores[1, 0])
    assert list(held_out_ranks(scores, evaluation.features[:, 1])) == [1, 3]
    result = evaluate_model(model, evaluation, RECOMMENDATION, torch.device("cpu"), known=known)
    assert result.metrics["hit-rate"] == 1.0 and result.num_examples == 2
    with pytest.raises(ValueError, match="known"):
        evaluate_model(model, evaluation, RECOMMENDATION, torch.device("cpu"))


# --- the federation and the model


def test_hospitals_get_whole_patients_numbered_locally_and_there_is_no_test_set(
    federation: SimulatedFederation,
) -> None:
    assert federation.test is None and federation.task.kind is TaskKind.RECOMMENDATION
    assert sum(h.site.train.patients for h in federation.hospitals) == 600
    for hospital in federation.hospitals:
        train, evaluation = hospital.site.train, hospital.site.evaluation
        assert set(train.features[:, 0]) == set(range(train.patients))
        assert set(evaluation.features[:, 0]) <= set(range(train.patients))
        assert np.all(evaluation.labels == 1)
    assert federation.schema.shared_input_shape == (1, 20)


def test_label_skew_does_not_apply_to_interactions(treatments_config: RunConfig) -> None:
    skewed = replace(treatments_config.data, partition=PartitionName.DIRICHLET)
    with pytest.raises(DataError, match="use iid or quantity"):
        build_federation(skewed)


def test_ncf_reads_interactions_only() -> None:
    check_model_input(ModelName.NCF, InputKind.INTERACTIONS)
    with pytest.raises(ConfigError, match="for interactions choose one of ncf"):
        check_model_input(ModelName.LOGREG, InputKind.INTERACTIONS)
    with pytest.raises(ConfigError, match="cannot read table"):
        check_model_input(ModelName.NCF, InputKind.TABLE)


def test_a_contract_cannot_describe_interactions_yet() -> None:
    with pytest.raises(ContractError, match="'format': must be one of table, images, sequences"):
        DataContract.parse('name = "x"\nformat = "interactions"\ntask = "binary"\n', source="t")


# --- patient embeddings stay at the hospital


def test_the_layout_and_the_weights_leave_patient_embeddings_out() -> None:
    def ncf(patients: int) -> torch.nn.Module:
        return build_model(
            ModelName.NCF,
            input_shape=(patients, 20),
            input_kind=InputKind.INTERACTIONS,
            task=RECOMMENDATION,
            seed=7,
        )

    hospital, aggregator = ncf(50), ncf(1)
    layout = ModelLayout.of(hospital)
    assert layout == ModelLayout.of(aggregator)
    assert not any(LOCAL_PREFIX in name for name in layout.names)
    assert len(get_weights(hospital)) == len(layout.names)
    # The shared layers start alike whatever the number of patients.
    assert all(
        np.array_equal(a, b)
        for a, b in zip(get_weights(hospital), get_weights(aggregator), strict=True)
    )
    own = get_local_weights(hospital)["local_patients.weight"].copy()
    set_weights(hospital, [w + 1.0 for w in get_weights(aggregator)], what="global model")
    assert np.array_equal(get_local_weights(hospital)["local_patients.weight"], own)


def test_a_hospital_releases_no_patient_embedding_and_keeps_its_own_privately(
    treatments_config: RunConfig, federation: SimulatedFederation, tmp_path: Path
) -> None:
    site = _site(federation, tmp_path / "state")
    site.state.mkdir(mode=0o700)
    aggregator = build_model(
        ModelName.NCF,
        input_shape=federation.schema.shared_input_shape,
        input_kind=InputKind.INTERACTIONS,
        task=federation.task,
        seed=treatments_config.data.seed,
    )
    weights = get_weights(aggregator)
    with PrivacyLedger(tmp_path / "ledger.db") as ledger:
        update = train_round(
            weights, treatments_config, site, plan=None, ledger=ledger, run_id="7", server_round=1
        )
    layout = ModelLayout.of(aggregator)
    assert [d.shape for d in update.delta] == list(layout.shapes)
    assert update.metrics["epsilon"] <= treatments_config.privacy.target_epsilon

    path = local_parameters_path(site.state, "7")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(get_local_weights(fresh_model(treatments_config, site))) == {"local_patients.weight"}
    # Evaluation completes the global model with the embeddings the hospital kept (exact
    # metrics, DP off, so the two can be told apart)...
    exact = replace(treatments_config, privacy=replace(treatments_config.privacy, enabled=False))
    with PrivacyLedger(tmp_path / "ledger.db") as ledger:
        kept = evaluate_round(
            weights, exact, site, plan=None, ledger=ledger, run_id="7", server_round=1
        )
        # ...and a run that never trained here starts from fresh ones.
        fresh = evaluate_round(
            weights, exact, site, plan=None, ledger=ledger, run_id="other", server_round=1
        )
    assert kept.num_examples == len(site.data.evaluation)
    assert {"hit-rate", "ndcg", "loss"} <= set(kept.metrics) and kept.metrics != fresh.metrics


def test_a_private_file_is_owner_only_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    (tmp_path / "p.safetensors.tmp").write_bytes(b"stale")
    save_safetensors(path, {"x": np.zeros(2, np.float32)}, {}, mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))


def test_an_unsafe_run_id_cannot_name_a_path_outside_the_state_folder(tmp_path: Path) -> None:
    path = local_parameters_path(tmp_path, "../../etc/x")
    assert path.parent == tmp_path / "local-parameters" and ".." not in path.name
