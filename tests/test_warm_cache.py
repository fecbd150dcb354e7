"""A warm process reads a site once per run, again when its file changes, never two runs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from fedcare.client.hospital import fresh_model
from fedcare.client.site_settings import SiteNode, SitePrivacy
from fedcare.client.warm_cache import RunCache
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import DeviceName
from fedcare.shared.errors import DataError
from fedcare.shared.serialization import get_weights
from fedcare.simulations.hospital_files import write_demo_hospitals


@pytest.fixture()
def hospital(tmp_path: Path) -> tuple[dict, RunConfig, Path]:
    files = write_demo_hospitals(tmp_path / "data", RunConfig().data)
    data = files.hospitals["hospital-1"]
    node = SiteNode(
        name="hospital-1",
        data=data,
        contract=files.contract,
        device=DeviceName.CPU,
        state=tmp_path / "state",
        privacy=SitePrivacy(),
    )
    config = RunConfig.from_flat({"contract": files.contract.read_text(), "device": "cpu"})
    return node.to_node_config(), config, data


def test_a_site_is_prepared_once_per_run_and_again_when_its_file_changes(
    hospital: tuple[dict, RunConfig, Path],
) -> None:
    node_config, config, data = hospital
    cache = RunCache()
    first = cache.site(node_config, config, "run-1")
    assert cache.site(node_config, config, "run-1") is first
    frame = pd.read_csv(data)
    frame = frame.iloc[: len(frame) - 5]
    frame.to_csv(data, index=False)
    smaller = cache.site(node_config, config, "run-1")
    assert smaller is not first
    assert len(smaller.data.train) + len(smaller.data.evaluation) == len(frame)
    # Same size and modification time, different content: still read again.
    stat = data.stat()
    text = data.read_text()
    data.write_text(text.replace("benign", "benigm", 1))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="diagnosis"):
        cache.site(node_config, config, "run-1")
    data.write_text(text)
    assert cache.site(node_config, config, "run-1") is not smaller


def test_a_new_run_drops_the_previous_runs_sites_and_models(
    hospital: tuple[dict, RunConfig, Path],
) -> None:
    node_config, config, _ = hospital
    cache = RunCache()
    site = cache.site(node_config, config, "run-1")
    builds = []

    def build():  # type: ignore[no-untyped-def]
        builds.append(1)
        return fresh_model(config, site)

    one, two = cache.model(site, config, build), cache.model(site, config, build)
    assert one is not two and len(builds) == 1
    assert all((a == b).all() for a, b in zip(get_weights(one), get_weights(two), strict=True))
    assert cache.site(node_config, config, "run-2") is not site
    cache.model(site, config, build)
    assert len(builds) == 2
