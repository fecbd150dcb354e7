"""What a run shows and where its log goes, without running a federation.

The progress display reads the run's own log lines; the run log routes Flower's,
Ray's and fedcare's lines to the run folder's file and keeps the console quiet.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
from rich.console import Console

from fedcare.progress import RoundProgress, follow_stream
from fedcare.server.run_directory import LOG_FILE, check_run_path
from fedcare.server.run_record import HospitalRound, RoundRecord, RunRecord
from fedcare.shared.errors import ConfigError
from fedcare.simulations.run_log import RUN_LOG_ENV, RunLog, log_worker_to_run_file

SECAGG_ROUND = [
    "\x1b[92mINFO \x1b[0m:      [ROUND 1]",
    "INFO : round 1/5: 3 hospitals asked to train",
    "[Stage 0] Received public keys from 3 clients.",
    "[Stage 1] Received encrypted key shares from 3 clients.",
    "[Stage 2] Received masked vectors from 3 clients.",
    "[Stage 3] Received key shares from 3 clients.",
    "INFO :      aggregate_fit: received 3 results and 0 failures",
    "INFO :      aggregate_evaluate: received 3 results and 0 failures",
    "INFO : round 1/5: auroc 0.980, accuracy 0.944 | epsilon spent: hospital-1 1.37",
]


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def test_a_round_shows_as_one_line_with_its_metric_and_epsilon() -> None:
    console, out = _console()
    with RoundProgress(console, secure_aggregation=True) as progress:
        for line in SECAGG_ROUND:
            progress.feed(line)
    printed = [line for line in out.getvalue().splitlines() if line.strip()]
    assert printed == ["round 1/5: auroc 0.980, accuracy 0.944 | epsilon spent: hospital-1 1.37"]


def test_flower_lines_and_unknown_lines_print_nothing() -> None:
    console, out = _console()
    with RoundProgress(console, secure_aggregation=False) as progress:
        for line in ("INFO :      [SUMMARY]", "History (loss, distributed):", "DEBUG: anything"):
            progress.feed(line)
    assert out.getvalue().strip() == ""


def test_a_streamed_run_goes_to_the_log_and_its_last_error_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "run" / LOG_FILE
    lines = [*SECAGG_ROUND, "\x1b[91mERROR \x1b[0m:     the aggregator lost its database"]

    def run(on_line):  # type: ignore[no-untyped-def]
        for line in lines:
            on_line(line)
        return 3

    code, last_error = follow_stream(run, log, secure_aggregation=True, verbose=False)
    assert code == 3
    assert last_error == "ERROR :     the aggregator lost its database"
    assert log.read_text().splitlines() == lines


def test_a_folder_holding_only_the_log_is_still_a_new_run_folder(tmp_path: Path) -> None:
    (tmp_path / LOG_FILE).write_text("started\n")
    check_run_path(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match="already exists"):
        check_run_path(tmp_path)


def test_a_round_line_lists_few_hospitals_and_summarises_many() -> None:
    def record(hospitals: int) -> RunRecord:
        round_record = RoundRecord(round=1)
        for index in range(hospitals):
            round_record.hospitals[f"hospital-{index + 1}"] = HospitalRound(
                train={"epsilon": 1.0 + index / 100}
            )
        return RunRecord(rounds=[round_record])

    assert record(2).epsilon_summary() == "hospital-1 1.00, hospital-2 1.01"
    assert record(100).epsilon_summary() == "at most 1.99 (100 hospitals)"
    assert RunRecord().epsilon_summary() == ""


@pytest.fixture()
def flower_console() -> logging.Handler:
    import flwr.simulation  # noqa: F401 - gives Flower's logger its console handler

    return next(
        h for h in logging.getLogger("flwr").handlers if type(h).__name__ == "ConsoleHandler"
    )


def test_a_quiet_run_log_holds_flower_back_and_keeps_every_line(
    tmp_path: Path, flower_console: logging.Handler
) -> None:
    level = flower_console.level
    path = tmp_path / LOG_FILE
    with RunLog(path, echo=False):
        assert flower_console.level > logging.CRITICAL
        logging.getLogger("flwr").info("[ROUND 1]")
        logging.getLogger("fedcare.server.strategy").info("round 1/5: 3 hospitals asked")
        logging.getLogger("ray").warning("a Ray warning")
    assert flower_console.level == level
    text = path.read_text()
    for expected in ("flwr: [ROUND 1]", "fedcare.server.strategy: round 1/5", "ray: a Ray warning"):
        assert expected in text
    logging.getLogger("flwr").info("after the run")
    assert "after the run" not in path.read_text()


def test_a_verbose_run_log_leaves_flower_on_the_console(
    tmp_path: Path, flower_console: logging.Handler
) -> None:
    level = flower_console.level
    with RunLog(tmp_path / LOG_FILE, echo=True):
        assert flower_console.level == level


def test_a_ray_worker_appends_to_the_run_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / LOG_FILE
    monkeypatch.setenv(RUN_LOG_ENV, str(path))
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        log_worker_to_run_file()
        logging.getLogger("flwr").debug("Node 7: stage 2 completed")
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
        for handler in list(logging.getLogger("flwr").handlers):
            if isinstance(handler, logging.FileHandler):
                logging.getLogger("flwr").removeHandler(handler)
                handler.close()
        logging.captureWarnings(False)
    assert f"{os.getpid()} DEBUG flwr: Node 7: stage 2 completed" in path.read_text()
