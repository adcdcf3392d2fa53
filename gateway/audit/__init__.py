"""The audit log: one hash-chained record per request, written by one group-committing writer."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from gateway.audit.chain import GENESIS, chain_line, record_hash

__all__ = ["GENESIS", "AuditSink", "chain_line", "record_hash"]


class AuditSink(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue one record without waiting; the future resolves once it is durable."""
        ...

    async def wait(self, future: asyncio.Future[None]) -> None:
        """Wait for a submitted record (spool or fail closed when the sink is slow/failing)."""
        ...

    async def write(self, record: dict[str, Any]) -> None: ...

    def depth(self) -> int: ...
