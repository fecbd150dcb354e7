"""Pretrained weights by sha256, and adapter-only DP fine-tuning: only adapters travel.

The "pretrained" network is a small Transformer built in code and saved as a
safetensors file, as a federation would distribute its foundation model.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcare.client.hospital import fresh_run_model, train_round
from fedcare.client.ledger import PrivacyLedger
from fedcare.client.site import Site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError
from fedcare.shared.serialization import ModelLayout, get_weights, save_safetensors
from fedcare.simulations.federation import build_federation

VITALS = {
    "dataset": "synthetic-vitals",
    "model": "transformer",
    "model-width": 2,
    "model-depth": 2,
    "device": "cpu",
    "num-server-rounds": 2,
    "local-epochs": 1,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    federation = build_federation(RunConfig.from_flat(VITALS).data)
    hospital = federation.hospitals[0]
    return Site(
        name=hospital.name,
        task=federation.task,
        data=hospital.site,
        state=tmp_path_factory.mktemp("vitals-site"),
        dataset=hospital.name,
    )


@pytest.fixture(scope="module")
def pretrained(site: Site, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A Transformer "pretrained" elsewhere: built with another seed, saved as safetensors."""
    config = RunConfig.from_flat({**VITALS, "seed": 7})
    network = fresh_run_model(config, site).module
    path = tmp_path_factory.mktemp("weights") / "vitals-transformer.safetensors"
    tensors = {name: t.detach().numpy() for name, t in network.state_dict().items()}
    save_safetensors(path, tensors, {"model": "transformer"})
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _config(pretrained: tuple[Path, str], **overrides: object) -> RunConfig:
    path, sha256 = pretrained
    return RunConfig.from_flat(
        {**VITALS, "pretrained-weights": str(path), "pretrained-sha256": sha256, **overrides}
    )


def test_a_pretrained_file_with_another_hash_is_refused(
    site: Site, pretrained: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = pretrained
    tampered = tmp_path / "tampered.safetensors"
    content = bytearray(path.read_bytes())
    content[-1] ^= 1
    tampered.write_bytes(bytes(content))
    config = _config((tampered, sha256))
    with pytest.raises(ConfigError, match="SHA-256 is not the run's") as refused:
        fresh_run_model(config, site)
    # The hospital's own file hash never goes into the refusal (it leaves the site).
    assert hashlib.sha256(bytes(content)).hexdigest()[:12] not in str(refused.value)


def test_a_missing_pretrained_file_is_refused_and_nothing_is_downloaded(
    site: Site, pretrained: tuple[Path, str], tmp_path: Path
) -> None:
    config = _config((tmp_path / "absent.safetensors", pretrained[1]))
    with pytest.raises(ConfigError, match="never downloads"):
        fresh_run_model(config, site)


def test_a_pretrained_run_needs_the_hash() -> None:
    with pytest.raises(ConfigError, match="pretrained-sha256"):
        RunConfig.from_flat({"pretrained-weights": "weights.safetensors"})
    with pytest.raises(ConfigError, match="fine-tune"):
        RunConfig.from_flat({"fine-tune": "lora"})


def test_full_fine_tuning_starts_from_the_pretrained_weights(
    site: Site, pretrained: tuple[Path, str]
) -> None:
    model = fresh_run_model(_config(pretrained), site)
    stored = fresh_run_model(RunConfig.from_flat({**VITALS, "seed": 7}), site).module
    for (name, mine), theirs in zip(
        model.module.state_dict().items(), stored.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert len(model.pretrained) == len(model.module.state_dict())


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("head", {"head.weight": (1, 64), "head.bias": (1,)}),
        (
            "lora",
            {
                "embed.lora_A.default.weight": (4, 7),
                "embed.lora_B.default.weight": (64, 4),
                "blocks.0.feed_forward.0.lora_A.default.weight": (4, 64),
                "blocks.0.feed_forward.0.lora_B.default.weight": (128, 4),
                "blocks.0.feed_forward.2.lora_A.default.weight": (4, 128),
                "blocks.0.feed_forward.2.lora_B.default.weight": (64, 4),
                "blocks.1.feed_forward.0.lora_A.default.weight": (4, 64),
                "blocks.1.feed_forward.0.lora_B.default.weight": (128, 4),
                "blocks.1.feed_forward.2.lora_A.default.weight": (4, 128),
                "blocks.1.feed_forward.2.lora_B.default.weight": (64, 4),
                "head.weight": (1, 64),
                "head.bias": (1,),
            },
        ),
    ],
)
def test_only_adapters_are_dp_trained_and_sent(
    site: Site, pretrained: tuple[Path, str], tmp_path: Path, mode: str, expected: dict
) -> None:
    config = _config(pretrained, **{"fine-tune": mode, "lora-rank": 4})
    aggregator = fresh_run_model(config, site)
    layout = ModelLayout.of(aggregator.module)
    # What travels (global model, updates, SecAgg+ vectors) is exactly the trained tensors.
    assert dict(zip(layout.names, layout.shapes, strict=True)) == expected
    assert aggregator.trained_parameters() == expected
    backbone_before = {
        name: t.clone()
        for name, t in aggregator.module.state_dict().items()
        if name not in expected
    }
    weights = get_weights(aggregator.module)
    with PrivacyLedger(tmp_path / "ledger.db") as ledger:
        update = train_round(
            weights, config, site, plan=None, ledger=ledger, run_id=f"ft-{mode}", server_round=1
        )
    assert [d.shape for d in update.delta] == [expected[name] for name in layout.names]
    assert any(float(np.abs(d).max()) > 0 for d in update.delta)
    assert update.metrics["epsilon"] > 0
    # The hospital's backbone did not move: it is the pretrained file's.
    hospital = fresh_run_model(config, site).module
    for name, tensor in hospital.state_dict().items():
        if name in backbone_before:
            assert torch.equal(tensor, backbone_before[name]), name
