"""A hospital's own key pair and what the operator returns: made, checked, never exposed."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from fedcare.hospital_commands import hospital_app
from fedcare.server.certificate_authority import CertificateAuthority, init_ca
from fedcare.shared.credentials import CredentialError
from fedcare.shared.hospital_credentials import (
    generate_node_key,
    load_bundle,
    load_node_key,
)

AGGREGATOR = "127.0.0.1:8000"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and "-----" not in line]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", name="Test federation")


def _enrolled(ca: CertificateAuthority, folder: Path, name: str = "hospital-A") -> Path:
    """A hospital's credentials folder after the whole exchange with the operator."""
    generate_node_key(folder)
    bundle = ca.add_hospital(name, aggregator_address=AGGREGATOR, public_key=folder / "node.pub")
    for returned in ("ca.crt", "bundle.toml"):
        shutil.copyfile(bundle.folder / returned, folder / returned)
    return folder


def test_keygen_makes_an_owner_only_p384_openssh_pair(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o755)
    fingerprint = generate_node_key(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["node.key", "node.pub"]
    # An existing folder is tightened too, not only a new one created 0700.
    assert _mode(folder) == 0o700 and _mode(folder / "node.key") == 0o600
    key = serialization.load_ssh_private_key((folder / "node.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    public = serialization.load_ssh_public_key((folder / "node.pub").read_bytes())
    assert public == key.public_key()
    assert load_node_key(folder) == fingerprint


def test_keygen_never_replaces_a_key(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    generate_node_key(folder)
    before = (folder / "node.key").read_bytes()
    with pytest.raises(CredentialError, match="already holds a node key; keep it"):
        generate_node_key(folder)
    assert (folder / "node.key").read_bytes() == before


def test_the_operators_files_complete_the_hospitals_folder(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    folder = _enrolled(ca, tmp_path / "credentials")
    bundle = load_bundle(folder)
    assert bundle.name == "hospital-A" and bundle.aggregator == AGGREGATOR
    assert bundle.fingerprint == ca.hospitals()[0].fingerprint
    assert bundle.ca_fingerprint == ca.fingerprint


def test_a_folder_waiting_for_the_operator_says_what_to_send(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    fingerprint = generate_node_key(folder)
    with pytest.raises(CredentialError) as caught:
        load_bundle(folder)
    message = str(caught.value)
    assert "bundle.toml does not exist yet" in message and fingerprint in message
    assert str(folder / "node.pub") in message


def test_load_bundle_refuses_a_key_others_can_read(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    folder = _enrolled(ca, tmp_path / "credentials")
    for mode in (0o644, 0o640):
        (folder / "node.key").chmod(mode)
        with pytest.raises(CredentialError, match=f"run `chmod 600 {folder / 'node.key'}`"):
            load_bundle(folder)


def test_load_bundle_detects_mismatched_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    a = _enrolled(ca, tmp_path / "a", "hospital-A")
    b = _enrolled(ca, tmp_path / "b", "hospital-B")
    (a / "node.pub").write_bytes((b / "node.pub").read_bytes())
    with pytest.raises(CredentialError, match="node.pub does not belong to .*node.key") as caught:
        load_bundle(a)
    secrets = _key_lines(a / "node.key") + _key_lines(b / "node.key")
    assert not any(line in str(caught.value) for line in secrets)
    # The whole key pair swapped for B's: a consistent pair, but not the bundle's key.
    (a / "node.key").write_bytes((b / "node.key").read_bytes())
    with pytest.raises(CredentialError, match="was issued for another key"):
        load_bundle(a)
    other = init_ca(tmp_path / "other", name="Other")
    (b / "ca.crt").write_bytes((other.ca_dir / "ca.crt").read_bytes())
    with pytest.raises(CredentialError, match="is not the CA .*bundle.toml names"):
        load_bundle(b)


def test_load_bundle_requires_an_unencrypted_p384_openssh_key(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    folder = _enrolled(ca, tmp_path / "credentials")
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    (folder / "node.key").write_bytes(ed)
    with pytest.raises(CredentialError, match="must be an EC P-384 key"):
        load_bundle(folder)
    (folder / "node.key").write_bytes((ca.ca_dir / "ca.key").read_bytes())
    with pytest.raises(CredentialError, match="is not an unencrypted OpenSSH private key") as e:
        load_bundle(folder)
    assert not any(line in str(e.value) for line in _key_lines(ca.ca_dir / "ca.key"))


def test_load_bundle_explains_damaged_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    folder = _enrolled(ca, tmp_path / "credentials")
    (folder / "bundle.toml").write_text("hospital = ")
    with pytest.raises(CredentialError, match="is not valid TOML"):
        load_bundle(folder)
    (folder / "bundle.toml").write_text('hospital = "hospital-A"\n')
    with pytest.raises(CredentialError, match="lacks aggregator, node-key-fingerprint"):
        load_bundle(folder)
    (folder / "node.key").unlink()
    with pytest.raises(CredentialError, match="node.key does not exist.*hospital keygen"):
        load_bundle(folder)


def test_cli_keygen_writes_to_site_credentials_and_prints_no_secret(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[hospital]\nname = "st-mary"\naggregator = "127.0.0.1:8000"\n'
        'credentials = "creds"\ndata = "d.csv"\ncontract = "c.toml"\n'
    )
    result = CliRunner().invoke(hospital_app, ["keygen", "--config", str(site)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "creds"
    assert load_node_key(folder) in result.output
    assert "node.pub" in result.output and "PRIVATE KEY" not in result.output
    assert not any(line in result.output for line in _key_lines(folder / "node.key"))
    again = CliRunner().invoke(hospital_app, ["keygen", "--out", str(folder)])
    assert again.exit_code == 2 and "already holds a node key" in again.output
    both = CliRunner().invoke(hospital_app, ["keygen", "--out", "x", "--config", str(site)])
    assert both.exit_code == 2 and "either --config site.toml or --out FOLDER" in both.output
