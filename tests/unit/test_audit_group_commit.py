"""Group commit: an idle writer commits a record at once; under load, one commit covers every
record that came in within `commit_interval_s` of the last one's start."""

from __future__ import annotations

import asyncio
import time

from gateway.audit.file_sink import FileAuditSink
from gateway.audit.verify import verify_path
from gateway.audit.writer import GroupWriter


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.began: list[float] = []

    async def commit(self, records: list[dict[str, int]]) -> None:
        self.began.append(time.monotonic())
        self.batches.append([r["n"] for r in records])


async def test_an_idle_writer_commits_at_once():
    rec = Recorder()
    writer = GroupWriter(rec.commit, commit_interval_s=0.5)
    writer.start()
    try:
        started = time.monotonic()
        await writer.write({"n": 1})
        assert time.monotonic() - started < 0.25  # not held back for the interval
        await asyncio.sleep(0.6)  # idle longer than the interval: the next one goes at once too
        started = time.monotonic()
        await writer.write({"n": 2})
        assert time.monotonic() - started < 0.25
        assert rec.batches == [[1], [2]]
    finally:
        await writer.close()


async def test_records_within_the_interval_share_one_commit():
    rec = Recorder()
    writer = GroupWriter(rec.commit, commit_interval_s=0.2)
    writer.start()
    try:
        await writer.write({"n": 0})  # a commit has just begun
        waits = []
        for n in range(1, 6):  # five records spread over the next 0.1 s
            waits.append(writer.submit({"n": n}))
            await asyncio.sleep(0.02)
        await asyncio.gather(*waits)
        assert rec.batches == [[0], [1, 2, 3, 4, 5]]
        gap = rec.began[1] - rec.began[0]
        assert 0.18 <= gap < 1.0  # the second commit waited out the interval, no longer
    finally:
        await writer.close()


async def test_interval_zero_commits_whatever_is_queued(tmp_path):
    sink = FileAuditSink(tmp_path, commit_interval_s=0)
    await sink.start()
    try:
        await asyncio.gather(*(sink.write({"n": n}) for n in range(50)))
    finally:
        await sink.close()
    result = verify_path(tmp_path)
    assert result.ok and result.records == 50, result.message
