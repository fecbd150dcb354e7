"""``fedcare ca ...``: the operator's commands, end to end; never a key on screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.ca_commands import ca_app
from fedcare.server.certificate_authority import CertificateAuthority
from tests.ca_helpers import AGGREGATOR, flat, own_key, secret_lines

runner = CliRunner()


def _invoke(*arguments: str) -> tuple[int, str]:
    result = runner.invoke(ca_app, list(arguments))
    return result.exit_code, result.output


def test_cli_end_to_end_never_prints_key_material(tmp_path: Path) -> None:
    folder = str(tmp_path / "ca")
    keys = {name: own_key(tmp_path, name) for name in ("hospital-A", "hospital-B")}
    outputs = []
    for arguments in (
        ["init", "--dir", folder, "--name", "My federation"],
        ["server", "--dir", folder, "--host", "127.0.0.1", "--host", "aggregator.example.org"],
        *(
            ["add-hospital", name, "--dir", folder, "--aggregator", AGGREGATOR]
            + ["--public-key", str(key / "node.pub")]
            for name, key in keys.items()
        ),
        ["list", "--dir", folder],
    ):
        code, output = _invoke(*arguments)
        assert code == 0, output
        outputs.append(output)
    hospitals = tmp_path / "ca" / "hospitals"
    secrets = secret_lines(
        tmp_path / "ca" / "ca.key",
        tmp_path / "ca" / "server" / "server.key",
        keys["hospital-A"] / "node.key",
    )
    code, removed = _invoke("remove-hospital", "hospital-A", "--dir", folder)
    assert code == 0, removed
    outputs.append(removed)
    everything = "\n".join(outputs)
    assert "PRIVATE KEY" not in everything
    assert not any(line in everything or line in flat(everything) for line in secrets)
    added = flat(outputs[2])
    assert f"send back {hospitals / 'hospital-A' / 'ca.crt'} and" in added
    assert "fedcare aggregator register hospital-A" in added
    fingerprint = CertificateAuthority.load(tmp_path / "ca").hospitals()[1].fingerprint
    assert fingerprint in outputs[3] and "hospital-B" in flat(outputs[4]) and "active" in outputs[4]
    revoked = CertificateAuthority.load(tmp_path / "ca").hospitals()[0]
    assert revoked.fingerprint in removed
    # No aggregator was ever started with this CA: its first start will refuse the key.
    assert "no aggregator of this CA is running" in flat(removed)
    code, listed = _invoke("list", "--dir", folder)
    assert code == 0 and "revoked" in listed


def test_cli_warns_when_the_server_certificate_misses_the_aggregator_host(tmp_path: Path) -> None:
    folder = str(tmp_path / "ca")
    key = str(own_key(tmp_path, "hospital-A") / "node.pub")
    assert _invoke("init", "--dir", folder, "--name", "F")[0] == 0
    assert _invoke("server", "--dir", folder, "--host", "localhost")[0] == 0
    code, output = _invoke(
        "add-hospital",
        "hospital-A",
        "--dir",
        folder,
        "--aggregator",
        "10.0.0.9:8000",
        "--public-key",
        key,
    )
    assert code == 0
    assert "warning:" in output and "but not 10.0.0.9" in flat(output)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["init", "--name", "Again"], "already holds a CA"),
        (["server", "--host", ""], "is not a host name or IP address"),
        (["server", "--host", "h:1"], "is not a host name or IP address"),
        (["add-hospital", "bad name", "--aggregator", AGGREGATOR], "must be 1-63 letters"),
        (["add-hospital", "hospital-A", "--aggregator", AGGREGATOR], "already recorded"),
        (["add-hospital", "hospital-B", "--aggregator", "nowhere"], "must be HOST:PORT"),
        (["remove-hospital", "hospital-Z"], "is not in this CA"),
    ],
)
def test_cli_errors_are_one_red_line_and_exit_2(
    tmp_path: Path, arguments: list[str], expected: str
) -> None:
    folder = str(tmp_path / "ca")
    key = ["--public-key", str(own_key(tmp_path, "hospital-A") / "node.pub")]
    other = ["--public-key", str(own_key(tmp_path, "other") / "node.pub")]
    assert _invoke("init", "--dir", folder, "--name", "F")[0] == 0
    assert (
        _invoke("add-hospital", "hospital-A", "--dir", folder, "--aggregator", AGGREGATOR, *key)[0]
        == 0
    )
    extra = other if arguments[0] == "add-hospital" else []
    code, output = _invoke(*arguments, *extra, "--dir", folder)
    assert code == 2, output
    assert flat(output).startswith("error:") and expected in flat(output)
    assert "Traceback" not in output and "PRIVATE KEY" not in output


def test_cli_on_a_folder_without_a_ca(tmp_path: Path) -> None:
    code, output = _invoke("list", "--dir", str(tmp_path / "none"))
    assert code == 2 and "holds no CA; create one with `fedcare ca init" in flat(output)
