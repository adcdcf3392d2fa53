"""Audit chain: writing with group commit, rotation, recovery, and verify catching tampering."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.audit.file_sink import FileAuditSink, audit_files
from gateway.audit.verify import verify_path


async def write_records(folder, n, **kw):
    sink = FileAuditSink(folder, **kw)
    await sink.start()
    await asyncio.gather(*(sink.write({"request_id": f"r{i}", "status": 200}) for i in range(n)))
    await sink.close()


async def test_records_chain_and_verify(tmp_path):
    await write_records(tmp_path, 25)
    result = verify_path(tmp_path)
    assert result.ok and result.records == 25, result.message
    lines = audit_files(tmp_path)[0].read_bytes().splitlines()
    assert [orjson.loads(x)["seq"] for x in lines] == list(range(1, 26))


async def test_chain_continues_across_restart_and_rotation(tmp_path):
    await write_records(tmp_path, 10, max_bytes=600)
    await write_records(tmp_path, 10, max_bytes=600)
    assert len(audit_files(tmp_path)) >= 2
    result = verify_path(tmp_path)
    assert result.ok and result.records == 20, result.message


async def test_torn_last_line_is_cut_on_restart(tmp_path):
    await write_records(tmp_path, 3)
    f = audit_files(tmp_path)[-1]
    with f.open("ab") as fh:
        fh.write(b'{"request_id": "half')  # a crash mid-write: never acknowledged
    await write_records(tmp_path, 2)
    result = verify_path(tmp_path)
    assert result.ok and result.records == 5, result.message


async def test_the_head_is_rewritten_in_place_at_a_fixed_width(tmp_path):
    """One `pwrite` per commit: the head stays one padded JSON object, and a longer head left
    by an earlier version is cut to the width on the next commit."""
    from gateway.audit.chain import record_hash
    from gateway.audit.file_sink import HEAD, HEAD_BYTES

    await write_records(tmp_path, 3)
    head = tmp_path / HEAD
    assert len(head.read_bytes()) == HEAD_BYTES
    last = audit_files(tmp_path)[-1].read_bytes().splitlines()[-1]
    assert orjson.loads(head.read_bytes()) == {"seq": 3, "hash": record_hash(last)}
    head.write_bytes(orjson.dumps({"seq": 3, "hash": record_hash(last)}) + b" " * 300)
    await write_records(tmp_path, 1)
    assert len(head.read_bytes()) == HEAD_BYTES and orjson.loads(head.read_bytes())["seq"] == 4
    result = verify_path(tmp_path)
    assert result.ok and result.records == 4, result.message


def tamper(folder, fn):
    f = audit_files(folder)[0]
    lines = f.read_bytes().splitlines()
    f.write_bytes(b"".join(x + b"\n" for x in fn(lines)))


@pytest.mark.parametrize(
    "kind,fn,where",
    [
        (
            "edit",
            lambda ls: ls[:3] + [ls[3].replace(b'"status":200', b'"status":201')] + ls[4:],
            "audit-000001.jsonl:5",
        ),
        ("delete", lambda ls: ls[:3] + ls[4:], "audit-000001.jsonl:4"),
        ("reorder", lambda ls: ls[:3] + [ls[4], ls[3]] + ls[5:], "audit-000001.jsonl:4"),
        ("truncate", lambda ls: ls[:6], "missing at the end"),
    ],
)
async def test_verify_detects_tampering(tmp_path, kind, fn, where):
    await write_records(tmp_path, 10)
    tamper(tmp_path, fn)
    result = verify_path(tmp_path)
    assert not result.ok, kind
    assert where in result.message, result.message


async def test_crlf_in_input_cannot_forge_records(tmp_path):
    sink = FileAuditSink(tmp_path)
    await sink.start()
    evil = 'x"}\n{"seq": 99, "prev": "' + "0" * 64 + '", "status": 200}\r\n\x1b[2J'
    await sink.write({"request_id": "r1", "user": evil})
    await sink.close()
    lines = audit_files(tmp_path)[0].read_bytes().splitlines()
    assert len(lines) == 1 and orjson.loads(lines[0])["user"] == evil
    assert verify_path(tmp_path).ok


async def test_failing_disk_spools_or_fails_closed(tmp_path):
    from gateway.audit.file_sink import AuditUnavailableError

    events = []
    sink = FileAuditSink(tmp_path, mode="fail_closed", timeout_s=0.2, on_event=events.append)
    await sink.start()
    real_commit = sink._commit

    def broken(records):
        raise OSError("disk full")

    sink._commit = broken
    with pytest.raises(AuditUnavailableError):
        await sink.write({"request_id": "r1"})
    sink.mode = "spool"
    await sink.write({"request_id": "r2"})  # answers go on; the record waits in the spool
    assert "spooled" in events and "fail_closed" in events and "write_error" in events
    sink._commit = real_commit
    await sink.close()  # the spool drains once the disk is back
    result = verify_path(tmp_path)
    assert result.ok and result.records == 2, result.message
