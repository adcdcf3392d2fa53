"""The JSONL audit sink: one writer task, group commit, size rotation, spool or fail closed.

Files are `audit-000001.jsonl`, `audit-000002.jsonl`, ... in one folder; the chain runs across
them. `audit.head` records the last committed (seq, hash) so a truncated tail is detectable: one
JSON object padded to a fixed width and rewritten in place after each commit (one `pwrite`, so
the commit thread makes three system calls in all: write, fsync, pwrite).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.chain import GENESIS, chain_line, record_hash
from gateway.audit.writer import COMMIT_INTERVAL_S, AuditUnavailableError, GroupWriter, Mode

__all__ = ["AuditUnavailableError", "FileAuditSink", "audit_files"]

log = logging.getLogger(__name__)
FILE_RE = re.compile(r"^audit-(\d{6})\.jsonl$")
HEAD = "audit.head"
HEAD_BYTES = 128  # {"seq":<up to 20 digits>,"hash":<64 hex>} and spaces


def audit_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("audit-*.jsonl") if FILE_RE.match(p.name))


class FileAuditSink:
    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        mode: Mode = "spool",
        timeout_s: float = 1.0,
        on_event: Callable[[str], None] = lambda event: None,
        on_commit: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._writer = GroupWriter(
            self._commit_async,
            commit_interval_s=commit_interval_s,
            mode=mode,
            timeout_s=timeout_s,
            on_event=on_event,
            on_commit=on_commit,
        )
        self.submit = self._writer.submit
        self.wait = self._writer.wait
        self.write = self._writer.write
        self.depth = self._writer.depth
        self._fh: Any = None
        self._head_fd: int | None = None
        self._index = 0
        self._seq = 0
        self._prev = GENESIS
        self._size = 0

    @property
    def mode(self) -> Mode:
        return self._writer.mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self._writer.mode = value

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._recover)
        self._writer.start()

    async def close(self) -> None:
        """Flush everything queued, then stop."""
        await self._writer.close()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._head_fd is not None:
            os.close(self._head_fd)
            self._head_fd = None

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
        self._fh = last.open("ab", buffering=0)
        self._size = last.stat().st_size

    def _open(self, index: int) -> None:
        if self._fh is not None:
            self._fh.close()
        self._index = index
        path = self.folder / f"audit-{index:06d}.jsonl"
        self._fh = path.open("ab", buffering=0)
        self._size = path.stat().st_size

    # writing ----------------------------------------------------------------------------
    async def _commit_async(self, records: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._commit, records)

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
        fd = self._fh.fileno()
        view = memoryview(out)
        while view:  # one call, short of a partial write
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        self._seq, self._prev = seq, prev
        self._size += len(out)
        head = orjson.dumps({"seq": seq, "hash": prev}).ljust(HEAD_BYTES)
        if self._head_fd is None:
            self._head_fd = os.open(self.folder / HEAD, os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(self._head_fd, head, 0)
            os.ftruncate(self._head_fd, HEAD_BYTES)  # a longer head from before is cut to size
        else:
            os.pwrite(self._head_fd, head, 0)
