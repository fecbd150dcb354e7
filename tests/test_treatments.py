"""Treatment recommendation trains 2 rounds in a real simulation, with DP-SGD and SecAgg+:
its ranking beats the initial model and chance, and no patient embedding leaves a hospital.

The aggregator holds no patient embeddings, so it has no test set and scores no
round-0 model; the hospitals score the global model from round 1 on. The initial
model's score is computed here the way the hospitals compute theirs.
"""

import json
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcare.client.hospital import fresh_model
from fedcare.client.site import Site, simulated_state
from fedcare.client.state_files import LOCAL_DIR
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.evaluation import evaluate_model
from fedcare.shared.metrics import RANKING_CUTOFF, weighted_mean
from fedcare.shared.serialization import LOCAL_PREFIX, load_safetensors
from fedcare.simulations.federation import build_federation
from fedcare.simulations.scenarios import scenario_overrides

pytestmark = pytest.mark.integration

HEADLINE = "hit-rate"


def _initial_and_chance(config: RunConfig) -> tuple[float, float]:
    """The initial model's row-weighted hit-rate over the hospitals, and a random ranking's."""
    federation = build_federation(config.data)
    scores, chances, weights = [], [], []
    for hospital in federation.hospitals:
        site = Site(hospital.name, federation.task, hospital.site, Path("unused"), hospital.name)
        train, evaluation = hospital.site.train, hospital.site.evaluation
        result = evaluate_model(
            fresh_model(config, site), evaluation, federation.task, torch.device("cpu"), known=train
        )
        scores.append(result.metrics)
        # A random ranking hits with probability k / candidates; the candidates of a patient
        # are the treatments it has not tried, plus the held-out one.
        tried = np.bincount(train.features[:, 0], minlength=train.patients)
        candidates = len(train.feature_names) - tried[evaluation.features[:, 0]]
        chances.append({HEADLINE: float(np.mean(np.minimum(RANKING_CUTOFF / candidates, 1.0)))})
        weights.append(len(evaluation))
    return weighted_mean(scores, weights)[HEADLINE], weighted_mean(chances, weights)[HEADLINE]


def test_treatments_learn_privately_and_patient_embeddings_stay_home(tmp_path: Path) -> None:
    from fedcare.simulations.simulate import simulate

    out = tmp_path / "run"
    config = RunConfig.from_flat(
        {
            **scenario_overrides("treatments"),
            "num-server-rounds": 2,
            "device": "cpu",
            "out-dir": str(out),
        }
    )
    summary = simulate(config)
    assert summary["status"] == "completed", summary["errors"]
    assert summary["rounds"]["aggregated"] == [1, 2]
    assert summary["privacy"]["differential_privacy"] and summary["secure_aggregation"]["enabled"]
    assert max(summary["privacy"]["per_hospital"].values()) <= config.privacy.target_epsilon
    assert summary["task"]["kind"] == "recommendation"
    assert summary["final_source"] == "federated" and set(summary["final"]) == {"federated"}

    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert not any(r["test_metrics"] for r in rounds)
    by_round = {r["round"]: r["federated_metrics"] for r in rounds}
    final = by_round[2][HEADLINE]
    initial, chance = _initial_and_chance(config)
    assert final > initial, f"hit-rate went from {initial:.3f} (initial model) to {final:.3f}"
    assert final > chance + 0.05, f"hit-rate {final:.3f} is no better than chance ({chance:.3f})"
    assert summary["final"]["federated"][HEADLINE] == final
    assert "ndcg" in summary["final"]["federated"]

    for model_file in [out / "model.safetensors", *sorted((out / "checkpoints").iterdir())]:
        names = load_safetensors(model_file)
        assert names and not any(LOCAL_PREFIX in name for name in names), model_file

    for hospital in summary["privacy"]["per_hospital"]:
        files = list((simulated_state(config, hospital) / LOCAL_DIR).iterdir())
        assert len(files) == 1, files
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert set(load_safetensors(files[0])) == {"local_patients.weight"}
