"""The federation CA: what it issues, what it refuses, and what it never reveals."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from fedcare.server.certificate_authority import CertificateAuthority, init_ca
from fedcare.shared.credentials import CredentialError
from fedcare.shared.hospital_credentials import HospitalBundle
from tests.ca_helpers import AGGREGATOR, own_key, secret_lines

runner = CliRunner()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "ca", name="Test federation")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _verify_signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> None:
    public = issuer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    hash_algorithm = certificate.signature_hash_algorithm
    assert hash_algorithm is not None
    public.verify(
        certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(hash_algorithm)
    )


# --- the CA ----------------------------------------------------------------


def test_init_creates_a_p384_ca_with_the_right_extensions(ca: CertificateAuthority) -> None:
    folder = ca.ca_dir
    assert _mode(folder) == 0o700
    assert _mode(folder / "ca.key") == 0o600
    certificate = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    _verify_signed_by(certificate, certificate)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    registry = json.loads((folder / "registry.json").read_text())
    assert registry["hospitals"] == [] and registry["ca-fingerprint"] == ca.fingerprint
    assert "Test federation" in certificate.subject.rfc4514_string()
    assert ca.ca_dir.as_posix() in repr(ca) and "PRIVATE" not in repr(ca)


def test_init_refuses_to_replace_an_existing_ca(ca: CertificateAuthority) -> None:
    before = _snapshot(ca.ca_dir)
    with pytest.raises(CredentialError, match="already holds a CA"):
        init_ca(ca.ca_dir, name="Another")
    assert _snapshot(ca.ca_dir) == before


@pytest.mark.parametrize(("name", "days"), [("", 10), ("x" * 61, 10), ("ok", 0)])
def test_init_rejects_bad_names_and_validity(tmp_path: Path, name: str, days: int) -> None:
    with pytest.raises(CredentialError):
        init_ca(tmp_path / "ca", name=name, days=days)
    assert not (tmp_path / "ca").exists()


def test_load_reopens_the_same_ca(ca: CertificateAuthority) -> None:
    assert CertificateAuthority.load(ca.ca_dir).fingerprint == ca.fingerprint


def test_load_explains_a_missing_or_damaged_ca(tmp_path: Path, ca: CertificateAuthority) -> None:
    with pytest.raises(CredentialError, match="holds no CA; create one with `fedcare ca init"):
        CertificateAuthority.load(tmp_path / "nowhere")
    registry = ca.ca_dir / "registry.json"
    registry.write_text("{not json")
    with pytest.raises(CredentialError, match="registry.json is damaged"):
        CertificateAuthority.load(ca.ca_dir)
    registry.unlink()
    with pytest.raises(CredentialError, match="registry.json is missing"):
        CertificateAuthority.load(ca.ca_dir)


def test_load_rejects_a_damaged_exposed_or_foreign_key(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    other = init_ca(tmp_path / "other", name="Other")
    key = ca.ca_dir / "ca.key"
    key.chmod(0o644)
    with pytest.raises(CredentialError, match=f"run `chmod 600 {key}`"):
        CertificateAuthority.load(ca.ca_dir)
    key.chmod(0o600)
    key.write_bytes((other.ca_dir / "ca.key").read_bytes())
    with pytest.raises(CredentialError, match="does not belong to"):
        CertificateAuthority.load(ca.ca_dir)
    key.write_bytes(b"garbage")
    with pytest.raises(CredentialError, match="damaged or encrypted") as caught:
        CertificateAuthority.load(ca.ca_dir)
    assert not any(line in str(caught.value) for line in secret_lines(other.ca_dir / "ca.key"))


# --- the aggregator's certificate --------------------------------------------


def test_server_certificate_chains_to_the_ca_with_sans_and_server_auth(
    ca: CertificateAuthority,
) -> None:
    issued = ca.issue_server_certificate(["10.0.0.5", "Aggregator.Example.org", "10.0.0.5"])
    # Loopback is always covered: the aggregator's front, executor and commands dial it.
    assert issued.hosts == ("10.0.0.5", "aggregator.example.org", "127.0.0.1", "::1", "localhost")
    certificate = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
    _verify_signed_by(certificate, ca.certificate)
    assert certificate.issuer == ca.certificate.subject
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert ips == ["10.0.0.5", "127.0.0.1", "::1"]
    assert sans.get_values_for_type(x509.DNSName) == ["aggregator.example.org", "localhost"]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _mode(issued.folder) == 0o700 and _mode(issued.key) == 0o600
    assert issued.ca_certificate.read_bytes() == (ca.ca_dir / "ca.crt").read_bytes()
    key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
    assert key.public_key() == certificate.public_key()


def test_server_certificate_never_outlives_the_ca(tmp_path: Path) -> None:
    short = init_ca(tmp_path / "ca", name="Short", days=10)
    issued = short.issue_server_certificate(["localhost"], days=825)
    assert issued.not_after == short.certificate.not_valid_after_utc


@pytest.mark.parametrize("hosts", [[], ["host:8000"], ["https://host"], ["bad_name!"], ["-x.org"]])
def test_server_certificate_rejects_bad_hosts(ca: CertificateAuthority, hosts: list[str]) -> None:
    with pytest.raises(CredentialError):
        ca.issue_server_certificate(hosts)
    assert not (ca.ca_dir / "server").exists()


def test_reissuing_the_server_certificate_leaves_hospitals_alone(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    _add(ca, tmp_path, "hospital-A")
    ca.issue_server_certificate(["127.0.0.1"])
    hospitals = _snapshot(ca.ca_dir / "hospitals")
    first = (ca.ca_dir / "server" / "server.pem").read_bytes()
    ca.issue_server_certificate(["127.0.0.1", "aggregator.example.org"])
    assert (ca.ca_dir / "server" / "server.pem").read_bytes() != first
    assert _snapshot(ca.ca_dir / "hospitals") == hospitals
    assert [r.name for r in ca.hospitals()] == ["hospital-A"]


# --- hospitals ---------------------------------------------------------------


def _add(ca: CertificateAuthority, tmp_path: Path, name: str) -> HospitalBundle:
    return ca.add_hospital(
        name, aggregator_address=AGGREGATOR, public_key=own_key(tmp_path, name) / "node.pub"
    )


def test_the_ca_records_a_hospitals_public_key_and_never_holds_a_private_one(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    own = own_key(tmp_path, "hospital-A")
    bundle = ca.add_hospital(
        "hospital-A", aggregator_address=AGGREGATOR, public_key=own / "node.pub"
    )
    folder = ca.ca_dir / "hospitals" / "hospital-A"
    assert bundle.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == ["bundle.toml", "ca.crt", "node.pub"]
    assert _mode(folder) == 0o700 and _mode(folder.parent) == 0o700
    assert (folder / "node.pub").read_bytes() == (own / "node.pub").read_bytes()
    for path in ca.ca_dir.rglob("*"):
        if path.is_file() and path.name != "ca.key":
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    public_line = (folder / "node.pub").read_bytes()
    # The fingerprint ssh-keygen -lf prints: unpadded base64 of SHA-256 over the key blob.
    digest = hashlib.sha256(base64.b64decode(public_line.split()[1])).digest()
    assert bundle.fingerprint == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    meta = tomllib.loads((folder / "bundle.toml").read_text())
    assert meta["hospital"] == "hospital-A" and meta["aggregator"] == AGGREGATOR
    assert (
        meta["node-key-fingerprint"] == bundle.fingerprint
        and meta["ca-fingerprint"] == ca.fingerprint
    )
    dt.datetime.fromisoformat(meta["created"])
    assert (folder / "ca.crt").read_bytes() == (ca.ca_dir / "ca.crt").read_bytes()
    assert not list(ca.ca_dir.rglob("*.tmp"))
    assert [(r.name, r.fingerprint, r.active) for r in ca.hospitals()] == [
        ("hospital-A", bundle.fingerprint, True)
    ]


def test_private_keys_are_created_owner_only_never_chmodded_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: os.PathLike[str] | str, flags: int, mode: int = 0o777) -> int:
        opened.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode)

    # Spies on the os module itself: the writes go through shared.private_files.
    monkeypatch.setattr(os, "open", spy)
    monkeypatch.setattr(os, "chmod", lambda *_: pytest.fail("chmod after creation"))
    ca = init_ca(tmp_path / "ca", name="Spy")
    ca.issue_server_certificate(["localhost"])
    _add(ca, tmp_path, "hospital-A")
    key_files = (".ca.key.", ".server.key.", ".node.key.")
    secrets = [
        (flags, mode) for path, flags, mode in opened if Path(path).name.startswith(key_files)
    ]
    assert len(secrets) == 3  # the hospital's node.key is written by the hospital, not the CA
    assert all(mode == 0o600 and flags & os.O_EXCL for flags, mode in secrets)


def test_adding_a_hospital_changes_nobody_elses_files(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    ca.issue_server_certificate(["127.0.0.1"])
    _add(ca, tmp_path, "hospital-A")
    before = {k: v for k, v in _snapshot(ca.ca_dir).items() if k != "registry.json"}
    _add(ca, tmp_path, "hospital-B")
    after = _snapshot(ca.ca_dir)
    assert all(after[name] == content for name, content in before.items())
    assert [r.name for r in ca.hospitals()] == ["hospital-A", "hospital-B"]


def test_a_name_already_active_or_a_key_already_used_is_refused(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    _add(ca, tmp_path, "hospital-A")
    before = _snapshot(ca.ca_dir)
    with pytest.raises(CredentialError, match="already recorded.*remove-hospital hospital-A"):
        _add(ca, tmp_path / "again", "hospital-A")
    reused = tmp_path / "sites" / "hospital-A" / "node.pub"
    with pytest.raises(CredentialError, match="already the key of hospital 'hospital-A'"):
        ca.add_hospital("hospital-B", aggregator_address=AGGREGATOR, public_key=reused)
    assert _snapshot(ca.ca_dir) == before


def test_the_ca_refuses_anything_but_a_p384_public_key(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    own = own_key(tmp_path, "hospital-A")
    with pytest.raises(CredentialError, match="is a private key.*must never leave") as caught:
        ca.add_hospital("hospital-A", aggregator_address=AGGREGATOR, public_key=own / "node.key")
    assert not any(line in str(caught.value) for line in secret_lines(own / "node.key"))
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "ed.pub").write_bytes(
        ed.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    with pytest.raises(CredentialError, match="must be an EC P-384 key"):
        ca.add_hospital("hospital-A", aggregator_address=AGGREGATOR, public_key=tmp_path / "ed.pub")
    (tmp_path / "junk.pub").write_text("hello")
    with pytest.raises(CredentialError, match="is not an OpenSSH public key"):
        ca.add_hospital(
            "hospital-A", aggregator_address=AGGREGATOR, public_key=tmp_path / "junk.pub"
        )
    with pytest.raises(CredentialError, match="does not exist.*fedcare hospital keygen"):
        ca.add_hospital(
            "hospital-A", aggregator_address=AGGREGATOR, public_key=tmp_path / "none.pub"
        )
    assert ca.hospitals() == [] and not (ca.ca_dir / "hospitals").exists()


def test_removing_a_hospital_revokes_only_that_one(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    a = _add(ca, tmp_path, "hospital-A")
    _add(ca, tmp_path, "hospital-B")
    files = _snapshot(ca.ca_dir / "hospitals")
    assert ca.remove_hospital("hospital-A") == a.fingerprint
    assert _snapshot(ca.ca_dir / "hospitals") == files
    records = {r.name: r for r in ca.hospitals()}
    assert records["hospital-A"].revoked is not None and not records["hospital-A"].active
    assert records["hospital-B"].active and records["hospital-A"].fingerprint == a.fingerprint
    with pytest.raises(CredentialError, match="already revoked"):
        ca.remove_hospital("hospital-A")
    with pytest.raises(CredentialError, match="is not in this CA"):
        ca.remove_hospital("hospital-C")


def test_a_revoked_hospital_can_be_recorded_again_and_its_history_stays(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    old = _add(ca, tmp_path, "hospital-A")
    ca.remove_hospital("hospital-A")
    new = _add(ca, tmp_path / "new", "hospital-A")
    assert new.fingerprint != old.fingerprint
    assert [(r.fingerprint, r.active) for r in ca.hospitals()] == [
        (old.fingerprint, False),
        (new.fingerprint, True),
    ]


@pytest.mark.parametrize(
    "name", ["", "a b", "x" * 64, "../evil", "a/b", "a.b", "ok\n", "hôpital", "-A1", "_x", "=1+1"]
)
def test_invalid_hospital_names_are_rejected(
    ca: CertificateAuthority, tmp_path: Path, name: str
) -> None:
    key = own_key(tmp_path, "key") / "node.pub"
    with pytest.raises(CredentialError, match="must be 1-63 letters, digits, '-' or '_'"):
        ca.add_hospital(name, aggregator_address=AGGREGATOR, public_key=key)
    assert not (ca.ca_dir / "hospitals").exists()


@pytest.mark.parametrize("name", ["x" * 63, "St-Marys_ICU-2", "7"])
def test_valid_hospital_names_are_accepted(
    ca: CertificateAuthority, tmp_path: Path, name: str
) -> None:
    assert _add(ca, tmp_path, name).name == name


@pytest.mark.parametrize(
    "address", ["localhost", "localhost:0", "host:70000", "::1:8000", "bad host:80"]
)
def test_invalid_aggregator_addresses_are_rejected(
    ca: CertificateAuthority, tmp_path: Path, address: str
) -> None:
    with pytest.raises(CredentialError):
        ca.add_hospital(
            "hospital-A",
            aggregator_address=address,
            public_key=own_key(tmp_path, "hospital-A") / "node.pub",
        )
    assert ca.hospitals() == []
