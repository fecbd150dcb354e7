"""Simulating on the user's own files, before any simulation starts: sources, splits, options.

A virtual hospital that reads a file must be a real hospital's twin: the same
reader, the same checks and the same preparation. Errors name the user's file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.client.readers.problems import Rule
from fedcare.client.readers.table import DataValidationError
from fedcare.client.site import load_site
from fedcare.client.site_settings import SiteNode, SitePrivacy
from fedcare.shared.config.data import PartitionName
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import DeviceName
from fedcare.shared.contract import DataContract
from fedcare.shared.data import InputKind
from fedcare.shared.errors import ConfigError, DataError
from fedcare.simulations.file_splits import SplitPlan, split_file
from fedcare.simulations.own_data import HospitalFile, OwnData
from tests.own_files import (
    IMAGE_CONTRACT,
    SEQUENCE_CONTRACT,
    TABLE_CONTRACT,
    cancer_table,
    vitals,
    write_image_npz,
    write_table_hospitals,
)

runner = CliRunner()


def _contract(text: str) -> DataContract:
    return DataContract.parse(text, source="contract.toml")


def _own(files: dict[str, Path], text: str = TABLE_CONTRACT, test: Path | None = None) -> OwnData:
    hospitals = tuple(HospitalFile(name, path) for name, path in files.items())
    return OwnData(text, "contract.toml", hospitals, test)


def _config(text: str, hospitals: int, tmp_path: Path, **flat: object) -> RunConfig:
    settings = {
        "contract": text,
        "hospitals": hospitals,
        "device": "cpu",
        "out-dir": str(tmp_path / "run"),
        **flat,
    }
    return RunConfig.from_flat(settings)  # type: ignore[arg-type]


@pytest.fixture()
def table_files(tmp_path: Path) -> dict[str, Path]:
    return write_table_hospitals(tmp_path)


# --------------------------------------------------------------------------- per-hospital files


def test_a_virtual_hospital_is_a_real_hospitals_twin(
    table_files: dict[str, Path], tmp_path: Path
) -> None:
    files = {name: table_files[name] for name in ("north", "south", "single-class")}
    data = _own(files)
    config = _config(TABLE_CONTRACT, 3, tmp_path, **{"differential-privacy": False})
    (tmp_path / "contract.toml").write_text(TABLE_CONTRACT)
    real = SiteNode(
        name="north",
        data=table_files["north"],
        contract=tmp_path / "contract.toml",
        device=DeviceName.CPU,
        state=tmp_path / "real-state",
        # A real hospital splits with its own seed and fraction; given the run's, it is the twin.
        privacy=SitePrivacy(
            max_epsilon=3.0, split_seed=config.data.seed, eval_fraction=config.data.eval_fraction
        ),
    )
    hospital = load_site(dict(real.to_node_config()), config, "run-1")
    virtual = data.site({"partition-id": 0}, config, "run-1")
    assert virtual.name == "north" and virtual.state == tmp_path / "run" / "hospitals" / "north"
    np.testing.assert_array_equal(virtual.data.train.features, hospital.data.train.features)
    np.testing.assert_array_equal(virtual.data.evaluation.labels, hospital.data.evaluation.labels)
    assert data.records({"partition-id": 2}, config)[0] == "single-class"


def test_the_federation_takes_a_single_class_hospital_and_the_test_file(
    table_files: dict[str, Path], tmp_path: Path
) -> None:
    files = {name: table_files[name] for name in ("north", "south", "single-class")}
    federation = _own(files, test=table_files["test"]).check(_config(TABLE_CONTRACT, 3, tmp_path))
    single = federation.hospitals[2]
    assert single.name == "single-class" and set(single.site.train.labels.tolist()) == {0.0}
    assert federation.test is not None and len(federation.test) == 100
    assert not np.isnan(federation.test.features).any()
    # Without a test file, the report scores the hospitals' own held-out rows.
    own = _own(files).federation(_config(TABLE_CONTRACT, 3, tmp_path))
    assert own.test is not None
    assert len(own.test) == sum(len(h.site.evaluation) for h in own.hospitals)


def test_a_single_class_hospital_is_refused_where_the_minimum_is_each_hospitals(
    table_files: dict[str, Path],
) -> None:
    text = TABLE_CONTRACT.replace('min_rows_per_class_scope = "federation"\n', "")
    with pytest.raises(DataValidationError) as caught:
        _own({"single-class": table_files["single-class"]}, text).federation(
            RunConfig.from_flat(
                {"contract": text, "hospitals": 1, "min-hospitals": 1, "secure-aggregation": False}
            )
        )
    assert [p.rule for p in caught.value.problems] == [Rule.SINGLE_CLASS]
    assert str(table_files["single-class"]) in str(caught.value)


def test_a_federation_below_its_class_minimum_is_refused(
    table_files: dict[str, Path], tmp_path: Path
) -> None:
    text = TABLE_CONTRACT.replace("min_rows_per_class = 10", "min_rows_per_class = 150")
    files = {name: table_files[name] for name in ("north", "south", "single-class")}
    with pytest.raises(DataError, match="class 'malignant' has 100 rows across the 3 hospitals"):
        _own(files, text).federation(_config(text, 3, tmp_path))


def test_an_error_names_the_hospitals_file(table_files: dict[str, Path], tmp_path: Path) -> None:
    south = pd.read_csv(table_files["south"])
    south.loc[3, "texture"] = 987654.0
    south.to_csv(table_files["south"], index=False)
    files = {name: table_files[name] for name in ("north", "south", "single-class")}
    with pytest.raises(DataError) as caught:
        _own(files).check(_config(TABLE_CONTRACT, 3, tmp_path))
    message = str(caught.value)
    assert f"{table_files['south']}: column 'texture': above-max in 1 row" in message
    assert "987654" not in message


def test_the_model_must_read_the_files(table_files: dict[str, Path], tmp_path: Path) -> None:
    files = {name: table_files[name] for name in ("north", "south", "single-class")}
    with pytest.raises(Exception, match="model 'cnn' cannot read table data"):
        _own(files).check(_config(TABLE_CONTRACT, 3, tmp_path, model="cnn"))


# --------------------------------------------------------------------------- one file shared out


def _plan(**changes: object) -> SplitPlan:
    fields: dict[str, object] = {
        "site_column": None,
        "partition": PartitionName.IID,
        "hospitals": 3,
        "alpha": 1.0,
        "seed": 0,
    }
    fields.update(changes)
    return SplitPlan(**fields)  # type: ignore[arg-type]


def test_a_site_column_keeps_each_sites_rows_together(tmp_path: Path) -> None:
    frame = cancer_table()
    frame["centre"] = np.array(["A", "B", "C d"])[np.arange(len(frame)) % 3]
    path = tmp_path / "all.csv"
    frame.to_csv(path, index=False)
    (tmp_path / "split").mkdir()
    hospitals = split_file(
        path,
        _contract(TABLE_CONTRACT),
        _plan(site_column="centre", hospitals=None),
        tmp_path / "split",
    )
    assert [h.name for h in hospitals] == ["centre-A", "centre-B", "centre-C_d"]
    parts = [pd.read_csv(h.path) for h in hospitals]
    assert all("centre" not in part.columns for part in parts)
    assert sorted(pd.concat(parts)["patient_id"]) == sorted(frame["patient_id"])
    assert hospitals[0].describe() == f"{path} (centre-A)"
    grouped = split_file(
        path,
        _contract(TABLE_CONTRACT),
        _plan(site_column="centre", hospitals=2),
        tmp_path / "split",
    )
    assert len(grouped) == 2


def test_a_sequence_file_is_split_by_stay_never_inside_one(tmp_path: Path) -> None:
    frame = vitals(60, seed=1)
    path = tmp_path / "stays.parquet"
    frame.to_parquet(path, index=False)
    (tmp_path / "split").mkdir()
    hospitals = split_file(path, _contract(SEQUENCE_CONTRACT), _plan(), tmp_path / "split")
    stays = [set(pd.read_parquet(h.path)["stay_id"]) for h in hospitals]
    assert sum(len(s) for s in stays) == 60 and not (stays[0] & stays[1] | stays[1] & stays[2])
    assert sum(len(pd.read_parquet(h.path)) for h in hospitals) == len(frame)


def test_a_stay_across_sites_and_a_blank_site_are_refused(tmp_path: Path) -> None:
    frame = vitals(30, seed=1)
    frame["ward"] = np.where(np.arange(len(frame)) % 2 == 0, "a", "b")
    path = tmp_path / "stays.csv"
    frame.to_csv(path, index=False)
    plan = _plan(site_column="ward", hospitals=None)
    with pytest.raises(DataError, match="30 patients have rows from more than one site"):
        split_file(path, _contract(SEQUENCE_CONTRACT), plan, tmp_path)
    frame["ward"] = "a"
    frame.loc[:4, "ward"] = ""
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="5 rows name no site"):
        split_file(path, _contract(SEQUENCE_CONTRACT), plan, tmp_path)
    with pytest.raises(DataError, match="has no column 'site'"):
        split_file(path, _contract(SEQUENCE_CONTRACT), _plan(site_column="site"), tmp_path)


def test_images_are_dealt_out_by_a_partitioner_only(tmp_path: Path) -> None:
    path = write_image_npz(tmp_path / "films.npz", 120, seed=0)
    (tmp_path / "split").mkdir()
    plan = _plan(partition=PartitionName.DIRICHLET, alpha=5.0)
    hospitals = split_file(path, _contract(IMAGE_CONTRACT), plan, tmp_path / "split")
    assert [h.name for h in hospitals] == ["hospital-1", "hospital-2", "hospital-3"]
    assert sum(len(np.load(h.path)["train_labels"]) for h in hospitals) == 120
    with pytest.raises(DataError, match="images have no site column"):
        split_file(path, _contract(IMAGE_CONTRACT), _plan(site_column="x"), tmp_path)


def test_a_partitioner_that_does_not_fit_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "all.csv"
    cancer_table().to_csv(path, index=False)
    contract = _contract(TABLE_CONTRACT)
    with pytest.raises(DataError, match=f"{path}: partition 'natural' needs"):
        split_file(path, contract, _plan(partition=PartitionName.NATURAL), tmp_path)
    with pytest.raises(DataError, match=f"{path}: no split with"):
        split_file(path, contract, _plan(partition=PartitionName.QUANTITY, hospitals=40), tmp_path)


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--data", "{north}"], "setting '--contract': --data files need the federation's"),
        (["--contract", "{contract}", "--data", "{north}"], "one file makes one hospital"),
        (
            [
                "--contract",
                "{contract}",
                "--data",
                "{north}",
                "--data",
                "{south}",
                "--site-column",
                "x",
            ],
            "one file per hospital fixes the hospitals",
        ),
        (
            ["--contract", "{contract}", "--data", "{north}", "--data", "x={north}"],
            "SecAgg+ needs at least 3 hospitals (got 2)",
        ),
        (
            [
                "--contract",
                "{contract}",
                "--data",
                "{north}",
                "--data",
                "north={south}",
                "--no-secure-aggregation",
            ],
            "two files give the hospital name 'north'",
        ),
        (["--contract", "{contract}", "--data", "a,b={north}"], "cannot name a hospital"),
        (["--contract", "{contract}", "--data", "nowhere.csv"], "nowhere.csv does not exist"),
        (
            ["--contract", "{contract}", "--data", "{north}", "--scenario", "imaging"],
            "a scenario picks built-in data",
        ),
        (
            [
                "--contract",
                "{contract}",
                "--data",
                "{north}",
                "--site-column",
                "x",
                "--partition",
                "iid",
            ],
            "--site-column already splits the file by site",
        ),
    ],
    ids=[
        "no-contract",
        "one-file-unsplit",
        "files-and-site-column",
        "secagg-needs-3",
        "duplicate-name",
        "bad-name",
        "missing-file",
        "scenario-and-data",
        "site-column-and-partition",
    ],
)
def test_own_data_options_that_do_not_fit_stop_with_one_sentence(
    arguments: list[str], expected: str, table_files: dict[str, Path], tmp_path: Path
) -> None:
    contract = tmp_path / "contract.toml"
    contract.write_text(TABLE_CONTRACT)
    paths = {"contract": contract, **table_files}
    out = tmp_path / "run"
    given = [argument.format(**paths) for argument in arguments]
    result = runner.invoke(app, ["simulate", "--out", str(out), *given])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert not out.exists()


def test_kinds_of_own_data_read_as_their_contracts_say(tmp_path: Path) -> None:
    path = write_image_npz(tmp_path / "films.npz", 60, seed=2)
    data = OwnData(IMAGE_CONTRACT, "c.toml", (HospitalFile("a", path),))
    assert data.contract().input_kind() is InputKind.IMAGES


def test_a_site_too_small_is_named_with_the_way_out(tmp_path: Path) -> None:
    frame = cancer_table().head(200)
    frame["centre"] = np.where(np.arange(len(frame)) < 10, "tiny", "large")
    path = tmp_path / "all.csv"
    frame.to_csv(path, index=False)
    (tmp_path / "split").mkdir()
    contract = _contract(TABLE_CONTRACT)
    hospitals = split_file(
        path, contract, _plan(site_column="centre", hospitals=None), tmp_path / "split"
    )
    data = OwnData(TABLE_CONTRACT, "contract.toml", hospitals)
    config = _config(TABLE_CONTRACT, 2, tmp_path, **{"secure-aggregation": False})
    with pytest.raises(DataError) as caught:
        data.check(config)
    message = str(caught.value)
    assert f"{path} (centre-tiny): file: too-few-rows" in message
    assert "--hospitals N makes fewer, larger ones" in message and "split" not in message


def test_a_stopped_run_on_own_files_resumes_with_the_same_files(tmp_path: Path) -> None:
    from fedcare.simulate_data import DataOptions, own_data, resumed_own_data

    frame = cancer_table()
    frame.to_csv(tmp_path / "all.csv", index=False)
    contract = tmp_path / "contract.toml"
    contract.write_text(TABLE_CONTRACT)
    options = DataOptions(contract, (str(tmp_path / "all.csv"),), None, None, True, True)
    base = _config(TABLE_CONTRACT, 4, tmp_path, partition="iid", seed=9)
    (tmp_path / "a").mkdir()
    first, settings = own_data(options, base, tmp_path / "a")
    assert settings == {"contract": TABLE_CONTRACT, "hospitals": 4}
    # A resume gives only --contract and --data: the run's own settings cut the file again.
    again = DataOptions(contract, (str(tmp_path / "all.csv"),), None, None, False, False)
    (tmp_path / "b").mkdir()
    resumed = resumed_own_data(again, base, tmp_path / "b")
    assert [h.name for h in resumed.hospitals] == [h.name for h in first.hospitals]
    for before, after in zip(first.hospitals, resumed.hospitals, strict=True):
        assert before.path.read_bytes() == after.path.read_bytes()
    contract.write_text(TABLE_CONTRACT.replace("min_rows = 30", "min_rows = 31"))
    with pytest.raises(ConfigError, match="not the contract the run started with"):
        resumed_own_data(again, base, tmp_path / "b")
    builtin = RunConfig.from_flat({"out-dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="this run simulated built-in data"):
        resumed_own_data(again, builtin, tmp_path / "b")


def test_resuming_own_files_without_them_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from fedcare.simulations.simulate import simulate

    config = _config(TABLE_CONTRACT, 3, tmp_path)
    with pytest.raises(ConfigError, match="give the same --contract and --data options again"):
        simulate(config)
    assert not (tmp_path / "run").exists()
