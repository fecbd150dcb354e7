"""``fedcare simulate --data``: real simulations (DP-SGD, SecAgg+, 2 rounds) on users' files.

One simulation per format with one file per hospital (a table with a held-out
test file, DP-filled gaps and a hospital holding one class; images as ``.npz``
files and a folder of class folders; ICU stays with most values unobserved), one
split by a site column and one dealt out by a partitioner. Files are small so
the suite stays quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.state_files import LEDGER_FILE
from fedcare.shared.imputation import fill_noise_multiplier
from tests.own_files import (
    IMAGE_CONTRACT,
    SEQUENCE_CONTRACT,
    TABLE_CONTRACT,
    cancer_table,
    write_image_folder,
    write_image_npz,
    write_table_hospitals,
    write_vitals,
)
from tests.privacy_oracle import independent_epsilon

pytestmark = pytest.mark.integration

runner = CliRunner()

Run = tuple[dict[str, Any], Path]


def _simulate(folder: Path, contract: str, *arguments: str) -> Run:
    (folder / "contract.toml").write_text(contract)
    out = folder / "run"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--contract",
            str(folder / "contract.toml"),
            *arguments,
            "--rounds",
            "2",
            "--out",
            str(out),
            "--set",
            "device=cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text()), out


def _rounds(out: Path) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = json.loads((out / "metrics.json").read_text())["rounds"]
    return rounds


def _assert_every_hospital_trained(summary: dict[str, Any], out: Path, names: list[str]) -> None:
    assert summary["status"] == "completed", summary["errors"]
    assert summary["rounds"]["aggregated"] == [1, 2] and summary["errors"] == []
    assert summary["secure_aggregation"]["enabled"] and summary["privacy"]["differential_privacy"]
    assert sorted(summary["privacy"]["per_hospital"]) == sorted(names)
    for record in _rounds(out)[1:]:
        assert sorted(record["hospitals"]) == sorted(names)
    assert max(summary["privacy"]["per_hospital"].values()) <= 3.0
    assert {"pooled", "local_only", "federated"} <= set(summary["final"])


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("tables")
    files = write_table_hospitals(folder)
    return _simulate(
        folder,
        TABLE_CONTRACT,
        *("--data", str(files["north"]), "--data", str(files["south"])),
        *("--data", f"single-class={files['single-class']}", "--test", str(files["test"])),
    )


def test_tables_one_file_per_hospital_with_a_test_file(tables: Run) -> None:
    summary, out = tables
    _assert_every_hospital_trained(summary, out, ["north", "south", "single-class"])
    rounds = _rounds(out)
    initial, final = rounds[0]["test_metrics"], rounds[-1]["test_metrics"]
    assert final["auroc"] > initial["auroc"] + 0.1, (initial, final)


def test_a_hospital_with_one_class_trains_and_releases_no_metric_of_the_other(
    tables: Run,
) -> None:
    _, out = tables
    for record in _rounds(out)[1:]:
        single = record["hospitals"]["single-class"]
        assert single["num_train_examples"] == 45 and single["privacy"]["epsilon"] <= 3.0
    # No malignant patient: a class below min-count (10), so it refuses the run's one
    # evaluation (the last round) and nothing about malignancies, not even noise, leaves it.
    last = _rounds(out)[-1]
    single = last["hospitals"]["single-class"]
    assert single["num_eval_examples"] is None and not single["evaluation"]
    refusals = [f for f in last["failures"] if f.startswith("evaluate: single-class")]
    assert refusals and "min-count" in refusals[0], last["failures"]


def test_a_dp_fill_is_booked_and_counted_in_each_hospitals_epsilon(tables: Run) -> None:
    summary, out = tables
    noise = fill_noise_multiplier(3.0, 1e-5)
    for name, reported in summary["privacy"]["per_hospital"].items():
        with PrivacyLedger(out / "hospitals" / name / LEDGER_FILE) as ledger:
            entries = ledger.history("", label=name)  # keyed on the rows; labelled by name
        # The fill (round 0), each round's training (2) and the one evaluation release, which
        # the hospital with one class refuses (a class below min-count).
        evaluated = name != "single-class"
        assert (entries[0].server_round, entries[0].sample_rate, entries[0].steps) == (0, 1.0, 1)
        assert entries[0].noise_multiplier == noise
        assert [e.is_evaluation for e in entries] == [False, False, False, *[True] * evaluated]
        expected = independent_epsilon([e.history_entry() for e in entries], 1e-5)
        assert reported == pytest.approx(expected, rel=1e-9)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("images")
    first = write_image_npz(folder / "first.npz", 90, seed=1)
    second = write_image_npz(folder / "second.npz", 90, seed=2)
    third = write_image_folder(folder / "third", 90, seed=3)
    return _simulate(
        folder,
        IMAGE_CONTRACT,
        *("--data", str(first), "--data", str(second), "--data", str(third)),
        *("--model", "cnn", "--set", "learning-rate=0.3"),
    )


def test_images_one_npz_or_folder_per_hospital(images: Run) -> None:
    summary, out = images
    _assert_every_hospital_trained(summary, out, ["first", "second", "third"])
    assert np.isfinite(summary["final"]["federated"]["accuracy"])


@pytest.fixture(scope="module")
def sequences(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("sequences")
    files = [write_vitals(folder / f"icu-{i}.csv", 80, seed=i) for i in range(3)]
    return _simulate(
        folder,
        SEQUENCE_CONTRACT,
        *(argument for path in files for argument in ("--data", str(path))),
        *("--model", "gru"),
    )


def test_sequences_with_most_values_unobserved_train_without_hand_imputation(
    sequences: Run,
) -> None:
    summary, out = sequences
    _assert_every_hospital_trained(summary, out, ["icu-0", "icu-1", "icu-2"])
    header = json.loads((out / "config.json").read_text())
    assert header["contract"] == SEQUENCE_CONTRACT
    rounds = _rounds(out)
    assert rounds[-1]["test_metrics"]["auroc"] > rounds[0]["test_metrics"]["auroc"]


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("sites")
    frame = cancer_table().head(420)
    frame["centre"] = np.array(["leeds", "york", "hull"])[np.arange(len(frame)) % 3]
    frame.to_csv(folder / "all.csv", index=False)
    return _simulate(
        folder, TABLE_CONTRACT, "--data", str(folder / "all.csv"), "--site-column", "centre"
    )


def test_one_file_split_by_its_site_column(sites: Run) -> None:
    summary, out = sites
    _assert_every_hospital_trained(summary, out, ["centre-hull", "centre-leeds", "centre-york"])
    assert summary["config"]["partition"] == "natural" and summary["config"]["hospitals"] == 3


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("partitioned")
    path = write_vitals(folder / "stays.parquet", 240, seed=5)
    return _simulate(
        folder,
        SEQUENCE_CONTRACT,
        *("--data", str(path), "--partition", "dirichlet", "--hospitals", "3", "--alpha", "5"),
        *("--model", "gru"),
    )


def test_one_file_dealt_out_by_a_partitioner(partitioned: Run) -> None:
    summary, out = partitioned
    _assert_every_hospital_trained(summary, out, ["hospital-1", "hospital-2", "hospital-3"])
    # Every stay is dealt to one hospital (tests/test_partitioners.py checks the exact split);
    # each hospital holds some of its stays out, and evaluation counts leave only as noise.
    stays = pd.read_parquet(out.parent / "stays.parquet")["stay_id"].nunique()
    trained = sum(h["num_train_examples"] for h in _rounds(out)[-1]["hospitals"].values())
    assert 0.5 * stays < trained < stays
