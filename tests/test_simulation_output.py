"""What ``fedcare simulate`` prints: quiet by default, everything with --verbose, all in the log.

By default a user sees a line per round (headline metric, epsilon) and the final
tables; Flower's and Ray's lines (SecAgg+ stages, the history dump, the
deprecation notice, the hospitals' lines) go to ``<run>/fedcare.log``. An error
is one sentence with the log's path.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedcare.server.run_directory import LOG_FILE

pytestmark = pytest.mark.integration

FLOWER_LINES = ("[ROUND 1]", "Secure aggregation", "DEPRECATED FEATURE", "History (loss")


def _simulate(out: Path, *arguments: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "fedcare", "simulate", "--out", str(out), *arguments],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("quiet") / "run"
    code, output = _simulate(out, "--rounds", "2")
    assert code == 0, output[-3000:]
    return out, output


def test_by_default_a_user_sees_a_line_per_round_and_the_tables(quiet: tuple[Path, str]) -> None:
    _, output = quiet
    text = " ".join(output.split())
    for round_number in (1, 2):
        pattern = rf"round {round_number}/2: auroc \d\.\d{{3}}, accuracy \d\.\d{{3}} \| "
        assert re.search(pattern + r"epsilon spent: hospital-1 \d\.\d\d", text), output
    for title in ("Global model per round", "Epsilon spent", "Final comparison"):
        assert title in text


def test_by_default_flower_and_ray_lines_stay_off_the_terminal(quiet: tuple[Path, str]) -> None:
    _, output = quiet
    for line in (*FLOWER_LINES, "INFO", "DEBUG", "ClientAppActor", "Traceback"):
        assert line not in output, line


def test_the_run_folders_log_holds_flowers_rays_and_the_hospitals_lines(
    quiet: tuple[Path, str],
) -> None:
    out, _ = quiet
    log = (out / LOG_FILE).read_text()
    for line in FLOWER_LINES:
        assert line in log, line
    assert "round 2/2: auroc" in log
    # The virtual hospitals run in Ray's worker processes, which append their own lines.
    processes = {int(pid) for pid in re.findall(r"^\S+ \S+ (\d+) ", log, flags=re.MULTILINE)}
    assert len(processes) >= 2
    assert re.search(r"DEBUG flwr: Node \d+: stage 2 completed", log)


def test_verbose_shows_flowers_lines_too(tmp_path: Path) -> None:
    code, output = _simulate(tmp_path / "run", "--rounds", "1", "--verbose")
    assert code == 0, output[-3000:]
    for line in ("[ROUND 1]", "Secure aggregation", "ClientAppActor"):
        assert line in output, line
    assert "[ROUND 1]" in (tmp_path / "run" / LOG_FILE).read_text()


def test_an_error_is_one_sentence_naming_the_log(tmp_path: Path) -> None:
    out = tmp_path / "run"
    missing = tmp_path / "missing.safetensors"
    code, output = _simulate(out, "--rounds", "1", "--set", f"initial-model={missing}")
    assert code == 1
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "the simulation stopped" in errors[0]
    assert str(out / LOG_FILE) in errors[0]
    assert "Traceback" not in output
    assert "Traceback" in (out / LOG_FILE).read_text()
