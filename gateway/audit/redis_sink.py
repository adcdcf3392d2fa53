"""The Redis Streams audit sink: each replica appends its own hash-chained stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.audit.chain import GENESIS, chain_line, record_hash
from gateway.audit.writer import COMMIT_INTERVAL_S, GroupWriter, Mode

__all__ = ["RedisStreamAuditSink", "read_stream"]

FIELD = b"record"


class RedisStreamAuditSink:
    """`XADD` of chained lines to `stream`; the chain head is recovered from the stream's end."""

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        mode: Mode = "spool",
        timeout_s: float = 1.0,
        on_event: Callable[[str], None] = lambda event: None,
        on_commit: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.stream = stream
        self._r = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._writer = GroupWriter(
            self._commit,
            commit_interval_s=commit_interval_s,
            mode=mode,
            timeout_s=timeout_s,
            on_event=on_event,
            on_commit=on_commit,
            retry_errors=(RedisError, OSError),
        )
        self.submit = self._writer.submit
        self.wait = self._writer.wait
        self.write = self._writer.write
        self.depth = self._writer.depth
        self._seq = 0
        self._prev = GENESIS
        self._recovered = False

    async def start(self) -> None:
        self._writer.start()

    async def close(self) -> None:
        await self._writer.close()
        await self._r.aclose()

    async def _recover(self) -> None:
        last = await self._r.xrevrange(self.stream, count=1)
        if last:
            line = last[0][1][FIELD]
            self._seq, self._prev = int(orjson.loads(line)["seq"]), record_hash(line)
        self._recovered = True

    async def _commit(self, records: list[dict[str, Any]]) -> None:
        if not self._recovered:
            await self._recover()
        seq, prev = self._seq, self._prev
        async with self._r.pipeline(transaction=True) as pipe:
            for record in records:
                seq += 1
                line = chain_line(record, seq, prev)
                prev = record_hash(line)
                pipe.xadd(self.stream, {FIELD: line})
            await asyncio.wait_for(pipe.execute(), self._writer.timeout_s)
        self._seq, self._prev = seq, prev


async def read_stream(url: str, stream: str) -> list[bytes]:
    """Every line of one audit stream, oldest first (for `tunegate audit verify redis://...`)."""
    r = aioredis.Redis.from_url(url)
    try:
        lines: list[bytes] = []
        start = "-"
        while True:
            batch = await r.xrange(stream, min=start, count=1000)
            if not batch:
                return lines
            lines += [fields[FIELD] for _, fields in batch]
            last_id = batch[-1][0].decode()
            ms, _, n = last_id.partition("-")
            start = f"{ms}-{int(n) + 1}"
    finally:
        await r.aclose()
