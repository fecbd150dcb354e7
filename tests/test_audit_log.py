"""Writing the audit log: one chain from many processes, refusals that write nothing, repair."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from fedcare.shared.audit import (
    GENESIS_HASH,
    AuditEntryError,
    AuditEvent,
    AuditLog,
    AuditLogAccessError,
    AuditLogCorruptError,
    verify_audit_log,
)
from fedcare.shared.errors import FedcareError
from tests.audit_logs import assert_broken_at, log_lines, rewrite_log, write_log


def test_an_empty_log_verifies_and_a_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, actor="aggregator")
    assert log.head() == (0, GENESIS_HASH)
    assert verify_audit_log(path).ok
    log.append(AuditEvent.RUN_STARTED, run="r1")
    entry = AuditLog(path, actor="aggregator").append("update-received", hospital="h1")
    assert entry.seq == 2 and verify_audit_log(path).entries == 2


def test_appended_garbage_is_named_and_blocks_appending_even_with_repair(tmp_path: Path) -> None:
    path, log = write_log(tmp_path)
    with path.open("ab") as stream:
        stream.write(b"rm -rf evidence\n")
    assert_broken_at(path, 6, 6, "not a valid JSON entry")
    with pytest.raises(AuditLogCorruptError, match="line 6") as raised:
        log.append(AuditEvent.UPDATE_RELEASED, round=6)
    assert raised.value.line == 6 and isinstance(raised.value, FedcareError)
    with pytest.raises(AuditLogCorruptError, match="line 6"):
        AuditLog(path, actor="hospital-a", repair_truncated_tail=True)


def test_a_cut_off_last_line_blocks_appending_until_repaired_explicitly(tmp_path: Path) -> None:
    path, log = write_log(tmp_path)
    lines = log_lines(path)
    lines[-1] = lines[-1][:40]
    rewrite_log(path, lines)
    assert_broken_at(path, 5, 5, "cut off")
    with pytest.raises(AuditLogCorruptError, match="line 5.*repair_truncated_tail=True"):
        AuditLog(path, actor="hospital-a")
    with pytest.raises(AuditLogCorruptError, match="line 5"):
        log.append(AuditEvent.UPDATE_RELEASED, round=5)
    assert path.read_bytes().endswith(lines[-1])  # the refusals wrote nothing

    repaired = AuditLog(path, actor="hospital-a", repair_truncated_tail=True)
    (aside,) = tmp_path.glob("audit.jsonl.corrupt-*")
    assert aside.read_bytes() == lines[-1]
    entry = json.loads(log_lines(path)[-1])
    assert (entry["seq"], entry["event"]) == (5, "log-repaired")
    assert entry["fields"] == {
        "line": 5,
        "bytes": 40,
        "moved-to": aside.name,
        "sha256": hashlib.sha256(lines[-1]).hexdigest(),
    }
    repaired.append(AuditEvent.UPDATE_RELEASED, round=5)
    assert verify_audit_log(path).entries == 6


def test_repair_leaves_an_intact_log_alone(tmp_path: Path) -> None:
    path, log = write_log(tmp_path)
    before = path.read_bytes()
    AuditLog(path, actor="hospital-a", repair_truncated_tail=True)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.corrupt-*"))


def _append_many(path: Path, actor: str, count: int, start: Event) -> None:
    log = AuditLog(path, actor=actor)
    start.wait()
    for number in range(count):
        log.append(AuditEvent.UPDATE_RECEIVED, number=number)


def test_two_processes_appending_at_once_leave_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")  # fork after torch's threads is unsafe
    start = context.Event()
    workers = [
        context.Process(target=_append_many, args=(path, actor, 200, start))
        for actor in ("hospital-a", "hospital-b")
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    verdict = verify_audit_log(path)
    assert (verdict.ok, verdict.entries) == (True, 400), verdict
    actors = [json.loads(raw)["actor"] for raw in log_lines(path)]
    assert actors.count("hospital-a") == actors.count("hospital-b") == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ids": {1, 2}}, "audit field 'ids' is a set"),
        ({"raw": b"\x00"}, "audit field 'raw' is a bytes"),
        ({"shape": (2, 3)}, "audit field 'shape' is a tuple"),
        ({"path": Path("/x")}, "is a PosixPath"),
        ({"nested": {"deep": [1, object()]}}, "audit field 'nested.deep[1]' is a object"),
        ({"loss": float("nan")}, "JSON cannot hold"),
        ({"by-site": {3: 1.0}}, "keys must be str"),
    ],
)
def test_non_json_fields_are_refused_and_nothing_is_written(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    path, log = write_log(tmp_path, entries=1)
    before = path.read_bytes()
    with pytest.raises(AuditEntryError, match=message.replace("[", r"\[")):
        log.append(AuditEvent.UPDATE_RELEASED, **fields)  # type: ignore[arg-type]
    assert path.read_bytes() == before


def test_unknown_events_and_blank_actors_are_refused(tmp_path: Path) -> None:
    path, log = write_log(tmp_path, entries=0)
    with pytest.raises(AuditEntryError, match="unknown audit event 'update-relased'"):
        log.append("update-relased")
    with pytest.raises(AuditEntryError, match="non-empty"):
        AuditLog(path, actor=" ")


def test_a_missing_folder_or_file_is_an_access_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogAccessError, match="cannot open"):
        AuditLog(tmp_path / "nowhere" / "audit.jsonl", actor="hospital-a")
    with pytest.raises(AuditLogAccessError, match="cannot open"):
        verify_audit_log(tmp_path / "missing.jsonl")


def test_a_cut_off_first_write_is_repaired_to_a_one_entry_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq":1,"ti')
    with pytest.raises(AuditLogCorruptError, match="line 1"):
        AuditLog(path, actor="hospital-a")
    AuditLog(path, actor="hospital-a", repair_truncated_tail=True)
    verdict = verify_audit_log(path)
    assert (verdict.ok, verdict.entries) == (True, 1)
    assert json.loads(path.read_bytes())["event"] == "log-repaired"
