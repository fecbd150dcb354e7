"""The audit log's hash chain: it names the first entry anyone tampered with."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcare.audit_commands import audit_app
from fedcare.shared.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditHeadError,
    canonical_json,
    entry_hash,
    format_head,
    parse_head,
    verify_audit_log,
)
from tests.audit_logs import assert_broken_at, log_lines, rechained, rewrite_log, write_log

runner = CliRunner()


def test_a_fresh_log_verifies_and_its_lines_have_the_documented_form(tmp_path: Path) -> None:
    path, log = write_log(tmp_path)
    verdict = verify_audit_log(path)
    assert (verdict.ok, verdict.entries, verdict.first_broken_seq) == (True, 5, None)
    assert verdict.first_broken_line is None and verdict.reason is None
    assert verdict.head == log.head()
    first, second = (json.loads(raw) for raw in log_lines(path)[:2])
    assert list(first) == ["seq", "time", "actor", "event", "fields", "prev", "hash"]
    assert (first["seq"], first["actor"]) == (1, "hospital-a")
    assert first["event"] == "instruction-received"
    assert first["fields"] == {"note": "ok", "round": 1, "sizes": [1, 2]}
    assert first["prev"] == GENESIS_HASH and second["prev"] == first["hash"]
    body = {k: v for k, v in first.items() if k != "hash"}
    assert first["hash"] == hashlib.sha256(canonical_json(body).encode()).hexdigest()
    assert first["time"].endswith("Z") and datetime.fromisoformat(first["time"]).tzinfo is not None


def test_an_edited_entry_is_named(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path)
    lines = log_lines(path)
    lines[2] = lines[2].replace(b'"round":3', b'"round":9')
    rewrite_log(path, lines)
    assert_broken_at(path, 3, 3, "the entry was edited")


def test_an_edited_entry_with_a_recomputed_own_hash_breaks_the_next_link(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path)
    lines = log_lines(path)
    body = {k: v for k, v in json.loads(lines[2]).items() if k != "hash"}
    body["fields"]["round"] = 9
    lines[2] = AuditEntry(**body, hash=entry_hash(body)).to_line()
    rewrite_log(path, lines)
    assert_broken_at(path, 4, 4, "prev does not match the hash of entry seq 3")


def test_a_deleted_entry_is_named(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path)
    lines = log_lines(path)
    del lines[2]
    rewrite_log(path, lines)
    assert_broken_at(path, 3, 3, "expected seq 3 but found seq 4: entries were deleted")


def test_swapped_entries_are_named(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path)
    lines = log_lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    rewrite_log(path, lines)
    assert_broken_at(path, 2, 2, "expected seq 2 but found seq 3")


def test_a_forged_entry_passes_itself_and_breaks_the_chain_at_the_next_one(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path)
    lines = log_lines(path)
    # The best forgery: right seq, right prev, recomputed own hash. It verifies on its own;
    # the original entry it displaces then repeats its seq.
    second = json.loads(lines[1])
    body = {k: v for k, v in second.items() if k != "hash"} | {"seq": 3, "prev": second["hash"]}
    lines.insert(2, AuditEntry(**body, hash=entry_hash(body)).to_line())
    rewrite_log(path, lines)
    assert_broken_at(path, 4, 4, "expected seq 4 but found seq 3: an entry was inserted")


def test_a_reformatted_line_is_named(tmp_path: Path) -> None:
    path, _ = write_log(tmp_path)
    lines = log_lines(path)
    lines[3] = json.dumps(json.loads(lines[3])).encode() + b"\n"  # same content, with spaces
    rewrite_log(path, lines)
    assert_broken_at(path, 4, 4, "reformatted")


def test_a_deleted_last_entry_is_caught_only_against_a_recorded_head(tmp_path: Path) -> None:
    path, log = write_log(tmp_path)
    head = log.head()
    assert head[0] == 5
    rewrite_log(path, log_lines(path)[:-1])
    assert verify_audit_log(path).ok  # the chain alone cannot tell
    assert_broken_at(path, 5, None, "the last 1 entries were removed", expected_head=head)


def test_a_recorded_head_accepts_growth_and_catches_a_rewritten_chain(tmp_path: Path) -> None:
    path, log = write_log(tmp_path, entries=3)
    head = log.head()
    log.append(AuditEvent.ROUND_REFUSED, reason="budget")
    assert verify_audit_log(path, expected_head=head).ok
    lines = log_lines(path)
    lines[1] = lines[1].replace(b'"round":2', b'"round":7')
    rewrite_log(path, rechained(lines, 1))
    assert verify_audit_log(path).ok  # fresh hashes throughout: only the head shows it
    assert_broken_at(path, 3, 3, "differs from the recorded head", expected_head=head)


def test_heads_round_trip_as_text() -> None:
    head = (12, "ab" * 32)
    assert parse_head(format_head(head)) == head
    for bad in ["12", "x:" + "ab" * 32, "3:abc", "-1:" + "ab" * 32]:
        with pytest.raises(AuditHeadError):
            parse_head(bad)


def _cli(*arguments: str) -> tuple[int, str]:
    result = runner.invoke(audit_app, ["verify", *arguments])
    return result.exit_code, " ".join(result.output.split())


def test_cli_exit_codes(tmp_path: Path) -> None:
    path, log = write_log(tmp_path)
    seq, digest = log.head()
    assert _cli(str(path)) == (0, f"audit log intact: 5 entries, head 5 {digest[:12]}")
    assert _cli(str(path), "--head", format_head((seq, digest)))[0] == 0

    rewrite_log(path, log_lines(path)[:-1])
    code, output = _cli(str(path), "--head", f"{seq}:{digest}")
    assert code == 1 and "audit log BROKEN at entry seq 5 (end of file)" in output

    lines = log_lines(path)
    lines[2] = lines[2].replace(b'"round":3', b'"round":9')
    rewrite_log(path, lines)
    code, output = _cli(str(path))
    assert code == 1
    assert "audit log BROKEN at entry seq 3 (line 3): its hash does not match" in output

    code, output = _cli(str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot open audit log" in output
    assert _cli(str(path), "--head", "five")[0] == 2
