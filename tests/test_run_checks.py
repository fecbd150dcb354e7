"""Runs are checked before they start, and a failure reaches the operator as one sentence.

``fedcare run`` parses the contract and the whole run config locally: nothing is
submitted, and nothing needs an aggregator, when either is wrong. A failure
inside the ServerApp is one line in Flower's stream, never a traceback; the
traceback goes to the run folder's ``fedcare.log``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from fedcare.cli import app
from fedcare.server.run_directory import LOG_FILE, record_failure
from fedcare.server.server_app import app as server_app
from fedcare.shared.errors import DataError
from tests.contracts import TABLE_CONTRACT, edit

runner = CliRunner()


def _one_sentence(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    text = " ".join(" ".join(lines).split())
    assert text.startswith("error: ") and "Traceback" not in output
    # Rich wraps a long line; what it prints is still one sentence.
    assert text.count("error: ") == 1
    return text


@pytest.fixture()
def contract(tmp_path: Path) -> Path:
    path = tmp_path / "contract.toml"
    path.write_text(TABLE_CONTRACT)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            edit(TABLE_CONTRACT, 'task = "binary"', 'task = "binery"'),
            "field 'task': must be one of",
        ),
        (edit(TABLE_CONTRACT, "min = 0.0\nmax = 50.0", "min = 9.0\nmax = 5.0"), "min greater"),
        ("name = [", "is not valid TOML"),
    ],
    ids=["unknown-task", "min-above-max", "not-toml"],
)
def test_run_with_a_broken_contract_answers_in_one_sentence(
    text: str, expected: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(text)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "run",
            "--state",
            str(tmp_path / "aggregator"),
            "--contract",
            str(broken),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2, result.output
    sentence = _one_sentence(result.output)
    assert str(broken) in sentence and expected in sentence
    assert not out.exists() and not (tmp_path / "aggregator").exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--set", "oops"], "--set expects key=value, got 'oops'"),
        (["--set", "epsilonn=2"], "did you mean 'epsilon'"),
        (["--model", "cnn"], "model 'cnn' cannot read table data"),
        (["--set", "initial-model=/no/such/model.safetensors"], "setting 'initial-model'"),
    ],
    ids=["set-without-equals", "unknown-setting", "model-cannot-read", "missing-initial-model"],
)
def test_run_with_a_bad_setting_answers_in_one_sentence(
    arguments: list[str], expected: str, contract: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        ["run", "--state", str(tmp_path / "aggregator"), "--contract", str(contract), *arguments],
    )
    assert result.exit_code == 2, result.output
    assert expected in _one_sentence(result.output)


def test_run_without_a_contract_file_answers_in_one_sentence(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "--state", str(tmp_path), "--contract", str(tmp_path / "missing.toml")]
    )
    assert result.exit_code == 2
    assert "cannot read" in _one_sentence(result.output)


@pytest.fixture()
def flower_lines() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("flwr").addHandler(handler)
    yield records
    logging.getLogger("flwr").removeHandler(handler)


def _context(run_config: dict[str, str]) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


def test_a_serverapp_that_cannot_start_says_why_in_one_line(
    flower_lines: list[logging.LogRecord], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    server_app(None, _context({"contract": "name = [", "out-dir": str(out)}))  # type: ignore[arg-type]
    [line] = [record for record in flower_lines if record.levelno >= logging.ERROR]
    assert line.exc_info is None and "\n" not in line.getMessage()
    assert line.getMessage().startswith("the run did not start: contract the run's contract")
    assert not out.exists()


def test_the_production_serverapp_given_no_contract_points_to_fedcare_simulate(
    flower_lines: list[logging.LogRecord], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    server_app(None, _context({"out-dir": str(out)}))  # type: ignore[arg-type]
    [line] = [record for record in flower_lines if record.levelno >= logging.ERROR]
    assert line.exc_info is None and "\n" not in line.getMessage()
    assert line.getMessage().endswith("simulations run through `fedcare simulate`")
    assert not out.exists()


def test_a_serverapp_that_fails_mid_run_points_to_its_log(
    flower_lines: list[logging.LogRecord], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    weights = tmp_path / "gone.safetensors"
    weights.write_text("not safetensors")
    run_config = {
        "contract": TABLE_CONTRACT,
        "hospital-names": "1=hospital-1",
        "out-dir": str(out),
        "initial-model": str(weights),
    }
    server_app(None, _context(run_config))  # type: ignore[arg-type]
    [line] = [record for record in flower_lines if record.levelno >= logging.ERROR]
    message = line.getMessage()
    assert line.exc_info is None and "\n" not in message
    assert message.startswith("the run stopped: ") and message.endswith(
        f"(details in {out / LOG_FILE})"
    )
    assert "Traceback (most recent call last)" in (out / LOG_FILE).read_text()


def test_a_planned_refusal_before_the_folder_exists_writes_nothing(tmp_path: Path) -> None:
    sentence = record_failure(tmp_path / "run", DataError("a\n  b"))
    assert sentence == "the run did not start: a b" and not (tmp_path / "run").exists()
