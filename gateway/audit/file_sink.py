"""The JSONL audit sink: one writer task, group commit, size rotation, spool or fail closed.

Files are `audit-000001.jsonl`, `audit-000002.jsonl`, ... in one folder; the chain runs across
them. `audit.head` records the last committed (seq, hash) so a truncated tail is detectable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson

from gateway.audit.chain import GENESIS, chain_line, record_hash
from gateway.errors import ServerError

__all__ = ["AuditUnavailableError", "FileAuditSink", "audit_files"]

log = logging.getLogger(__name__)
FILE_RE = re.compile(r"^audit-(\d{6})\.jsonl$")
HEAD = "audit.head"
Mode = Literal["spool", "fail_closed"]


class AuditUnavailableError(ServerError):
    status = 503
    type = "service_unavailable_error"
    default_code = "audit_unavailable"


def audit_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("audit-*.jsonl") if FILE_RE.match(p.name))


class FileAuditSink:
    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        commit_interval_s: float = 0.05,
        mode: Mode = "spool",
        timeout_s: float = 1.0,
        on_event: Callable[[str], None] = lambda event: None,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.commit_interval_s = commit_interval_s
        self.mode = mode
        self.timeout_s = timeout_s
        self.on_event = on_event
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._fh: Any = None
        self._index = 0
        self._seq = 0
        self._prev = GENESIS
        self._size = 0
        self.failing = False

    def depth(self) -> int:
        return self._queue.qsize()

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._recover)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Flush everything queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _recover(self) -> None:
        """Continue the chain from the last complete line; a torn last line is cut off."""
        self.folder.mkdir(parents=True, exist_ok=True)
        files = audit_files(self.folder)
        if not files:
            self._open(1)
            return
        last = files[-1]
        self._index = int(FILE_RE.match(last.name).group(1))  # type: ignore[union-attr]
        data = last.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning(
                "audit: cutting a torn last record (%d bytes) in %s", len(data) - cut, last.name
            )
            with last.open("r+b") as fh:
                fh.truncate(cut)
            data = data[:cut]
        lines = data.splitlines()
        if not lines and len(files) > 1:
            lines = files[-2].read_bytes().splitlines()
        if lines:
            self._seq = int(orjson.loads(lines[-1])["seq"])
            self._prev = record_hash(lines[-1])
        self._fh = last.open("ab")
        self._size = last.stat().st_size

    def _open(self, index: int) -> None:
        if self._fh is not None:
            self._fh.close()
        self._index = index
        path = self.folder / f"audit-{index:06d}.jsonl"
        self._fh = path.open("ab")
        self._size = path.stat().st_size

    # writing ------------------------------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue a record now (never blocks); the future resolves when it is durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return future

    async def write(self, record: dict[str, Any]) -> None:
        await self.wait(self.submit(record))

    async def wait(self, future: asyncio.Future[None]) -> None:
        """Wait for durability; when the sink is slow or failing, spool or fail closed."""
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except (TimeoutError, OSError) as exc:
            if self.mode == "fail_closed":
                self.on_event("fail_closed")
                raise AuditUnavailableError(
                    "The audit log is unavailable; the request was not served.",
                    headers={"Retry-After": "1"},
                ) from None
            self.on_event("spooled")  # kept in the queue; written when the sink recovers
            log.warning("audit sink slow or failing (%s); record spooled", type(exc).__name__)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.commit_interval_s
            while time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            while True:
                try:
                    await asyncio.to_thread(self._commit, [r for r, _ in batch])
                    break
                except OSError as exc:
                    self.failing = True
                    self.on_event("write_error")
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    await asyncio.sleep(0.2)  # keep the records; retry until the disk is back
            self.failing = False
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
                self._queue.task_done()
            self.on_event("committed")

    def _commit(self, records: list[dict[str, Any]]) -> None:
        seq, prev = self._seq, self._prev
        out = bytearray()
        for record in records:
            seq += 1
            line = chain_line(record, seq, prev)
            prev = record_hash(line)
            out += line + b"\n"
        if self._size and self._size + len(out) > self.max_bytes:
            self._open(self._index + 1)
        self._fh.write(out)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._seq, self._prev = seq, prev
        self._size += len(out)
        head = self.folder / HEAD
        tmp = head.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"seq": seq, "hash": prev}))
        os.replace(tmp, head)
