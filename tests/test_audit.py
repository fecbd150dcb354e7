"""The audit log: an append-only hash chain that names the first entry anyone tampered with."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from datetime import datetime
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.audit_commands import audit_app
from fedcare.shared.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEntryError,
    AuditEvent,
    AuditHeadError,
    AuditLog,
    AuditLogAccessError,
    AuditLogCorruptError,
    canonical_json,
    entry_hash,
    format_head,
    parse_head,
    verify_audit_log,
)
from fedcare.shared.errors import FedcareError

runner = CliRunner()


def _log(tmp_path: Path, entries: int = 5) -> tuple[Path, AuditLog]:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, actor="hospital-a")
    for number in range(1, entries + 1):
        log.append(AuditEvent.INSTRUCTION_RECEIVED, round=number, note="ok", sizes=[1, 2])
    return path, log


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _rechained(lines: list[bytes], start: int) -> list[bytes]:
    """Recompute seq, prev and hash from ``start`` on: what a tamperer with write access can do."""
    out = lines[:start]
    prev = json.loads(out[-1])["hash"] if out else GENESIS_HASH
    for seq, raw in enumerate(lines[start:], start=start + 1):
        body = {k: v for k, v in json.loads(raw).items() if k != "hash"}
        body |= {"seq": seq, "prev": prev}
        entry = AuditEntry(**body, hash=entry_hash(body))
        out.append(entry.to_line())
        prev = entry.hash
    return out


def _broken_at(path: Path, seq: int, line: int | None, reason: str, **kwargs: object) -> None:
    verdict = verify_audit_log(path, **kwargs)  # type: ignore[arg-type]
    assert not verdict.ok
    assert (verdict.first_broken_seq, verdict.first_broken_line) == (seq, line), verdict
    assert reason in (verdict.reason or ""), verdict.reason
    assert verdict.entries == seq - 1


def test_a_fresh_log_verifies_and_its_lines_have_the_documented_form(tmp_path: Path) -> None:
    path, log = _log(tmp_path)
    verdict = verify_audit_log(path)
    assert (verdict.ok, verdict.entries, verdict.first_broken_seq) == (True, 5, None)
    assert verdict.first_broken_line is None and verdict.reason is None
    assert verdict.head == log.head()
    first, second = (json.loads(raw) for raw in _lines(path)[:2])
    assert list(first) == ["seq", "time", "actor", "event", "fields", "prev", "hash"]
    assert (first["seq"], first["actor"]) == (1, "hospital-a")
    assert first["event"] == "instruction-received"
    assert first["fields"] == {"note": "ok", "round": 1, "sizes": [1, 2]}
    assert first["prev"] == GENESIS_HASH and second["prev"] == first["hash"]
    body = {k: v for k, v in first.items() if k != "hash"}
    assert first["hash"] == hashlib.sha256(canonical_json(body).encode()).hexdigest()
    assert first["time"].endswith("Z") and datetime.fromisoformat(first["time"]).tzinfo is not None


def test_an_empty_log_verifies_and_a_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, actor="aggregator")
    assert log.head() == (0, GENESIS_HASH)
    assert verify_audit_log(path).ok
    log.append(AuditEvent.RUN_STARTED, run="r1")
    entry = AuditLog(path, actor="aggregator").append("update-received", hospital="h1")
    assert entry.seq == 2 and verify_audit_log(path).entries == 2


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"round":3', b'"round":9')
    _write(path, lines)
    _broken_at(path, 3, 3, "the entry was edited")


def test_an_edited_entry_with_a_recomputed_own_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    lines = _lines(path)
    body = {k: v for k, v in json.loads(lines[2]).items() if k != "hash"}
    body["fields"]["round"] = 9
    lines[2] = AuditEntry(**body, hash=entry_hash(body)).to_line()
    _write(path, lines)
    _broken_at(path, 4, 4, "prev does not match the hash of entry seq 3")


def test_a_deleted_entry_is_named(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    lines = _lines(path)
    del lines[2]
    _write(path, lines)
    _broken_at(path, 3, 3, "expected seq 3 but found seq 4: entries were deleted")


def test_swapped_entries_are_named(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _write(path, lines)
    _broken_at(path, 2, 2, "expected seq 2 but found seq 3")


def test_a_forged_entry_passes_itself_and_breaks_the_chain_at_the_next_one(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    lines = _lines(path)
    # The best forgery: right seq, right prev, recomputed own hash. It verifies on its own;
    # the original entry it displaces then repeats its seq.
    second = json.loads(lines[1])
    body = {k: v for k, v in second.items() if k != "hash"} | {"seq": 3, "prev": second["hash"]}
    lines.insert(2, AuditEntry(**body, hash=entry_hash(body)).to_line())
    _write(path, lines)
    _broken_at(path, 4, 4, "expected seq 4 but found seq 3: an entry was inserted")


def test_appended_garbage_is_named_and_blocks_appending_even_with_repair(tmp_path: Path) -> None:
    path, log = _log(tmp_path)
    with path.open("ab") as stream:
        stream.write(b"rm -rf evidence\n")
    _broken_at(path, 6, 6, "not a valid JSON entry")
    with pytest.raises(AuditLogCorruptError, match="line 6") as raised:
        log.append(AuditEvent.UPDATE_RELEASED, round=6)
    assert raised.value.line == 6 and isinstance(raised.value, FedcareError)
    with pytest.raises(AuditLogCorruptError, match="line 6"):
        AuditLog(path, actor="hospital-a", repair_truncated_tail=True)


def test_a_reformatted_line_is_named(tmp_path: Path) -> None:
    path, _ = _log(tmp_path)
    lines = _lines(path)
    lines[3] = json.dumps(json.loads(lines[3])).encode() + b"\n"  # same content, with spaces
    _write(path, lines)
    _broken_at(path, 4, 4, "reformatted")


def test_a_cut_off_last_line_blocks_appending_until_repaired_explicitly(tmp_path: Path) -> None:
    path, log = _log(tmp_path)
    lines = _lines(path)
    lines[-1] = lines[-1][:40]
    _write(path, lines)
    _broken_at(path, 5, 5, "cut off")
    with pytest.raises(AuditLogCorruptError, match="line 5.*repair_truncated_tail=True"):
        AuditLog(path, actor="hospital-a")
    with pytest.raises(AuditLogCorruptError, match="line 5"):
        log.append(AuditEvent.UPDATE_RELEASED, round=5)
    assert path.read_bytes().endswith(lines[-1])  # the refusals wrote nothing

    repaired = AuditLog(path, actor="hospital-a", repair_truncated_tail=True)
    (aside,) = tmp_path.glob("audit.jsonl.corrupt-*")
    assert aside.read_bytes() == lines[-1]
    entry = json.loads(_lines(path)[-1])
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
    path, log = _log(tmp_path)
    before = path.read_bytes()
    AuditLog(path, actor="hospital-a", repair_truncated_tail=True)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.corrupt-*"))


def test_a_deleted_last_entry_is_caught_only_against_a_recorded_head(tmp_path: Path) -> None:
    path, log = _log(tmp_path)
    head = log.head()
    assert head[0] == 5
    _write(path, _lines(path)[:-1])
    assert verify_audit_log(path).ok  # the chain alone cannot tell
    _broken_at(path, 5, None, "the last 1 entries were removed", expected_head=head)


def test_a_recorded_head_accepts_growth_and_catches_a_rewritten_chain(tmp_path: Path) -> None:
    path, log = _log(tmp_path, entries=3)
    head = log.head()
    log.append(AuditEvent.ROUND_REFUSED, reason="budget")
    assert verify_audit_log(path, expected_head=head).ok
    lines = _lines(path)
    lines[1] = lines[1].replace(b'"round":2', b'"round":7')
    _write(path, _rechained(lines, 1))
    assert verify_audit_log(path).ok  # fresh hashes throughout: only the head shows it
    _broken_at(path, 3, 3, "differs from the recorded head", expected_head=head)


def test_heads_round_trip_as_text() -> None:
    head = (12, "ab" * 32)
    assert parse_head(format_head(head)) == head
    for bad in ["12", "x:" + "ab" * 32, "3:abc", "-1:" + "ab" * 32]:
        with pytest.raises(AuditHeadError):
            parse_head(bad)


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
    actors = [json.loads(raw)["actor"] for raw in _lines(path)]
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
    path, log = _log(tmp_path, entries=1)
    before = path.read_bytes()
    with pytest.raises(AuditEntryError, match=message.replace("[", r"\[")):
        log.append(AuditEvent.UPDATE_RELEASED, **fields)  # type: ignore[arg-type]
    assert path.read_bytes() == before


def test_unknown_events_and_blank_actors_are_refused(tmp_path: Path) -> None:
    path, log = _log(tmp_path, entries=0)
    with pytest.raises(AuditEntryError, match="unknown audit event 'update-relased'"):
        log.append("update-relased")
    with pytest.raises(AuditEntryError, match="non-empty"):
        AuditLog(path, actor=" ")


def test_a_missing_folder_or_file_is_an_access_error(tmp_path: Path) -> None:
    with pytest.raises(AuditLogAccessError, match="cannot open"):
        AuditLog(tmp_path / "nowhere" / "audit.jsonl", actor="hospital-a")
    with pytest.raises(AuditLogAccessError, match="cannot open"):
        verify_audit_log(tmp_path / "missing.jsonl")


def _cli(*arguments: str) -> tuple[int, str]:
    result = runner.invoke(audit_app, ["verify", *arguments])
    return result.exit_code, " ".join(result.output.split())


def test_cli_exit_codes(tmp_path: Path) -> None:
    path, log = _log(tmp_path)
    seq, digest = log.head()
    assert _cli(str(path)) == (0, f"audit log intact: 5 entries, head 5 {digest[:12]}")
    assert _cli(str(path), "--head", format_head((seq, digest)))[0] == 0

    _write(path, _lines(path)[:-1])
    code, output = _cli(str(path), "--head", f"{seq}:{digest}")
    assert code == 1 and "audit log BROKEN at entry seq 5 (end of file)" in output

    lines = _lines(path)
    lines[2] = lines[2].replace(b'"round":3', b'"round":9')
    _write(path, lines)
    code, output = _cli(str(path))
    assert code == 1
    assert "audit log BROKEN at entry seq 3 (line 3): its hash does not match" in output

    code, output = _cli(str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot open audit log" in output
    assert _cli(str(path), "--head", "five")[0] == 2


def test_a_cut_off_first_write_is_repaired_to_a_one_entry_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq":1,"ti')
    with pytest.raises(AuditLogCorruptError, match="line 1"):
        AuditLog(path, actor="hospital-a")
    AuditLog(path, actor="hospital-a", repair_truncated_tail=True)
    verdict = verify_audit_log(path)
    assert (verdict.ok, verdict.entries) == (True, 1)
    assert json.loads(path.read_bytes())["event"] == "log-repaired"
