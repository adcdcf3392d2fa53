"""`tunegate audit verify PATH`: walk the chain and report the first record that breaks it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.audit.chain import GENESIS, record_hash
from gateway.audit.file_sink import HEAD, audit_files

__all__ = ["VerifyResult", "verify_path"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    message: str


def _files(path: Path) -> tuple[list[Path], Path | None]:
    if path.is_dir():
        head = path / HEAD
        return audit_files(path), head if head.is_file() else None
    return [path], None


def verify_lines(name: str, lines: list[bytes]) -> VerifyResult:
    """Check one sequence of chained lines (a Redis stream) from its first record on."""
    expected_prev, expected_seq = GENESIS, None
    for index, line in enumerate(lines, 1):
        where = f"{name}#{index}"
        try:
            record = orjson.loads(line)
            seq, prev = int(record["seq"]), str(record["prev"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return VerifyResult(False, index - 1, f"{where}: not a valid audit record")
        if expected_seq is not None and seq != expected_seq:
            return VerifyResult(
                False,
                index - 1,
                f"{where}: sequence {seq}, expected "
                f"{expected_seq} (a record was deleted or reordered)",
            )
        if prev != expected_prev and not (expected_seq is None and index == 1 and seq > 1):
            return VerifyResult(
                False,
                index - 1,
                f"{where}: record {seq} does not follow the "
                "previous record (edited, deleted or reordered)",
            )
        expected_prev, expected_seq = record_hash(line), seq + 1
    return VerifyResult(True, len(lines), f"ok: {len(lines)} records, chain intact")


def verify_path(path: Path) -> VerifyResult:
    """Check every line's sequence number and `prev` hash, across rotated files, and the head."""
    files, head = _files(path)
    if not files or not all(f.is_file() for f in files):
        return VerifyResult(False, 0, f"{path}: no audit files found")
    expected_prev, expected_seq, count = GENESIS, None, 0
    for file in files:
        data = file.read_bytes()
        if data and not data.endswith(b"\n"):
            return VerifyResult(False, count, f"{file.name}: the last record is truncated")
        for lineno, line in enumerate(data.splitlines(), 1):
            where = f"{file.name}:{lineno}"
            try:
                record = orjson.loads(line)
                seq, prev = int(record["seq"]), str(record["prev"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return VerifyResult(False, count, f"{where}: not a valid audit record")
            if expected_seq is None and count == 0 and file == files[0] and prev != GENESIS:
                expected_seq = seq  # a folder whose older files were archived: start mid-chain
                expected_prev = prev
            if expected_seq is not None and seq != expected_seq:
                return VerifyResult(
                    False,
                    count,
                    f"{where}: sequence {seq}, expected "
                    f"{expected_seq} (a record was deleted or reordered)",
                )
            if prev != expected_prev:
                return VerifyResult(
                    False,
                    count,
                    f"{where}: record {seq} does not follow the "
                    "previous record (edited, deleted or reordered)",
                )
            expected_prev, expected_seq, count = record_hash(line), seq + 1, count + 1
    if head is not None:
        try:
            committed = orjson.loads(head.read_bytes())
        except orjson.JSONDecodeError:
            return VerifyResult(False, count, f"{head.name}: unreadable")
        last_seq = (expected_seq or 1) - 1
        if int(committed["seq"]) > last_seq:
            return VerifyResult(
                False,
                count,
                f"records {last_seq + 1}..{committed['seq']} are "
                "missing at the end (the log was truncated)",
            )
        if int(committed["seq"]) == last_seq and committed["hash"] != expected_prev:
            return VerifyResult(False, count, f"record {last_seq} differs from the committed one")
    return VerifyResult(True, count, f"ok: {count} records, chain intact")
