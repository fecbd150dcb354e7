"""The fedcare command line: bad settings stop before anything starts, with one clear sentence."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--epsilon", "0"], "setting 'epsilon': must be a finite number > 0"),
        (["--delta", "1.5"], "setting 'delta': must lie in (0, 1)"),
        (["--hospitals", "2"], "SecAgg+ needs at least 3 hospitals"),
        (["--rounds", "0"], "setting 'num-server-rounds': must be >= 1"),
        (["--model", "gpt"], "setting 'model': 'gpt' is no built-in model (logreg, mlp"),
        (["--partition", "random"], "setting 'partition': must be one of"),
        (["--alpha", "0"], "setting 'dirichlet-alpha': must be > 0"),
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--set", "epsilonn=2"], "did you mean 'epsilon'"),
        (["--hospitals", "40"], "raise dirichlet-alpha or use fewer hospitals"),
        (["--partition", "natural"], "needs a site column"),
    ],
)
def test_bad_settings_stop_with_one_sentence_and_write_nothing(
    arguments: list[str], expected: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", "--out", str(out), *arguments])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert not out.exists()


def test_an_occupied_run_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "already exists and is not an empty folder" in " ".join(result.output.split())


def test_help_lists_the_commands_and_options() -> None:
    result = runner.invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    for option in [
        "--hospitals",
        "--rounds",
        "--epsilon",
        "--delta",
        "--partition",
        "--seed",
        "--model",
        "--scenario",
        "--out",
    ]:
        assert option in result.output
