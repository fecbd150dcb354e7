"""Audit logs the audit tests share: written through AuditLog, read and tampered with as bytes."""

from __future__ import annotations

import json
from pathlib import Path

from fedcare.shared.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    AuditLog,
    entry_hash,
    verify_audit_log,
)


def write_log(tmp_path: Path, entries: int = 5) -> tuple[Path, AuditLog]:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, actor="hospital-a")
    for number in range(1, entries + 1):
        log.append(AuditEvent.INSTRUCTION_RECEIVED, round=number, note="ok", sizes=[1, 2])
    return path, log


def log_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite_log(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def rechained(lines: list[bytes], start: int) -> list[bytes]:
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


def assert_broken_at(path: Path, seq: int, line: int | None, reason: str, **kwargs: object) -> None:
    verdict = verify_audit_log(path, **kwargs)  # type: ignore[arg-type]
    assert not verdict.ok
    assert (verdict.first_broken_seq, verdict.first_broken_line) == (seq, line), verdict
    assert reason in (verdict.reason or ""), verdict.reason
    assert verdict.entries == seq - 1
