"""The round book names every hospital a round asked and says what became of it, from node ids."""

from __future__ import annotations

import logging

import pytest

from fedcare.server.round_book import (
    EVALUATE,
    HOSPITAL_WORDS_LIMIT,
    TRAIN,
    RoundBook,
    fail_round,
)
from fedcare.server.run_record import RoundRecord

REGISTRY = {11: "hospital-1", 12: "hospital-2", 13: "hospital-3"}


def _deployment_book() -> RoundBook:
    return RoundBook(REGISTRY, registered=True)


def test_a_failure_is_recorded_and_logged_under_the_strategys_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = RoundRecord(round=4)
    with caplog.at_level(logging.ERROR):
        fail_round(record, "train: hospital-1: refused")
    assert record.failures == ["train: hospital-1: refused"]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("fedcare.server.strategy", "round 4 train: hospital-1: refused")
    ]


def test_a_deployment_names_hospitals_by_registered_node_never_by_their_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = _deployment_book()
    with caplog.at_level(logging.WARNING):
        assert book.learn_name(11, "hospital-1") == "hospital-1"
        assert book.learn_name(12, "hospital-1") == "hospital-2"
        assert book.learn_name(99, "hospital-3") == "node 99"
    assert [r.getMessage() for r in caplog.records] == [
        "hospital-2 replied as 'hospital-1'; it is reported under its registered name",
        "node 99 replied as 'hospital-3'; it is reported under its registered name",
    ]
    assert book.describe(12) == "hospital-2"  # a claim never renames a node


def test_a_simulated_hospital_is_named_by_its_reply() -> None:
    book = RoundBook({}, registered=False)
    assert book.describe(5) == "node 5"
    assert book.learn_name(5, "hospital-7") == "hospital-7"
    assert book.learn_name(6, 3.0) == "node 6"  # a claim that is no name is ignored
    assert book.describe(5) == "hospital-7"


def test_asking_to_train_lists_the_hospitals_in_the_record() -> None:
    book, record = _deployment_book(), RoundRecord(round=1)
    book.ask(record, TRAIN, [13, 11, 42])
    assert record.asked == ["hospital-1", "hospital-3", "node 42"]
    book.ask(record, EVALUATE, [12])
    assert record.asked == ["hospital-1", "hospital-3", "node 42"]


def test_every_asked_hospital_is_accounted_for_once() -> None:
    book, record = _deployment_book(), RoundRecord(round=2)
    book.ask(record, TRAIN, [11, 12, 13])
    book.note_exchange(record, "train", 1.5, [(12, "budget exhausted")])
    book.note_failures(record, TRAIN, [(13, "refused: contract changed")])
    book.note_silent(record, TRAIN, answered=[13])
    assert record.failures == [
        "train: hospital-2: budget exhausted",
        "train: hospital-3: refused: contract changed",
        "train: no result from hospital-1 (dropped out or missed the deadline)",
    ]
    book.note_silent(record, TRAIN, answered=[])  # the stage's book was closed
    assert len(record.failures) == 3


def test_secure_aggregation_stages_add_up_and_their_errors_count_as_training() -> None:
    book, record = _deployment_book(), RoundRecord(round=3)
    book.ask(record, TRAIN, [11, 12])
    book.note_exchange(record, "setup", 0.5, [])
    book.note_exchange(record, "share_keys", 0.25, [(11, "timed out")])
    book.note_exchange(record, "share_keys", 0.25, [])
    book.note_exchange(record, EVALUATE, 2.0, [])
    assert record.stage_seconds == {"setup": 0.5, "share_keys": 0.5, "evaluate": 2.0}
    book.note_silent(record, TRAIN, answered=[12])
    assert record.failures == ["train: hospital-1: timed out"]


def test_an_evaluation_error_does_not_excuse_silence_in_training() -> None:
    book, record = _deployment_book(), RoundRecord(round=1)
    book.ask(record, TRAIN, [11])
    book.ask(record, EVALUATE, [11])
    book.note_exchange(record, EVALUATE, 1.0, [(11, "no budget")])
    book.note_silent(record, TRAIN, answered=[])
    book.note_silent(record, EVALUATE, answered=[])
    assert record.failures == [
        "evaluate: hospital-1: no budget",
        "train: no result from hospital-1 (dropped out or missed the deadline)",
    ]


def test_a_halted_secure_aggregation_round_names_who_was_asked() -> None:
    book, record = _deployment_book(), RoundRecord(round=5)
    book.start_training()
    book.ask(record, TRAIN, [12, 11])
    book.check_trained(record)
    assert record.failures == [
        "train: secure aggregation halted before aggregating (too few hospitals completed "
        "the protocol; asked: hospital-1, hospital-2); the global model is unchanged"
    ]


def test_a_round_asking_nobody_that_halted_says_none() -> None:
    book, record = _deployment_book(), RoundRecord(round=1)
    book.start_training()
    book.check_trained(record)
    assert record.failures[0].endswith("asked: none); the global model is unchanged")


@pytest.mark.parametrize("ended", ["concluded", "aggregated"])
def test_a_round_whose_training_ended_in_the_strategy_did_not_halt(ended: str) -> None:
    book, record = _deployment_book(), RoundRecord(round=1)
    book.start_training()
    book.ask(record, TRAIN, [11])
    if ended == "concluded":
        book.conclude_training()
    else:
        record.aggregated = True
    book.check_trained(record)
    assert record.failures == []


def test_a_hospitals_reason_reaches_the_record_as_one_short_printable_line() -> None:
    # A hostile hospital's reason: a terminal escape, a forged log line, an endless text.
    forged = "refused\x1b[2J\r\nround 1 aggregated: all hospitals agreed " + "x" * 5000
    book, record = _deployment_book(), RoundRecord(round=1)
    book.ask(record, TRAIN, [11, 12])
    book.note_exchange(record, "train", 1.0, [(11, forged)])
    book.note_failures(record, TRAIN, [(12, "\x07" + forged)])
    for line in record.failures:
        assert line.isprintable() and len(line) < HOSPITAL_WORDS_LIMIT + 40
        assert "refused [2J round 1 aggregated" in line and line.endswith("…")
