"""The engine pool's generation requests: a lean HTTP/1.1 client over pooled keep-alive
connections, the answers parsed by httptools (the parser uvicorn serves with).

Every API request makes one generation request to an engine server. aiohttp's client spends
about 155 µs of CPU on one (its request and response objects, its header, cookie and timeout
machinery); this client makes the same request in about 35 µs (`loadtests/README.md`). It does
only what that request needs:
- connections per server, at most `limit` at once (a caller waits for a free one), reused
  last-in first-out, dropped when the server closes them or after `keepalive_s` idle;
- the request written in one piece; the answer's body handed over as it arrives (chunked or by
  length), reading paused while a slow consumer leaves more than `HIGH_WATER` unread;
- a connection reused from the pool that the server closed before answering anything is
  replaced by a new one, once (the server dropped it idle; the request never reached it);
- timeouts: `connect_timeout` to connect, `read_timeout` for each wait on the server (headers,
  then each piece of the body), both as `TimeoutError`; a connection that fails is closed and
  never reused. Failures are `OSError`s: `UpstreamConnectError` (could not connect),
  `UpstreamClosed` (closed or garbled before the answer was whole).
The pool's other calls (health, models, metrics, adapters) are few and stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = ["UpstreamClient", "UpstreamClosed", "UpstreamConnectError", "UpstreamResponse"]

HIGH_WATER = 256 * 1024  # unread body bytes before reading pauses
LOW_WATER = 64 * 1024  # ... and resumes


class UpstreamConnectError(OSError):
    """No connection to the server could be made."""


class UpstreamClosed(ConnectionError):
    """The connection closed (or the answer could not be parsed) before the answer was whole."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request on it at a time."""

    def __init__(self, client: UpstreamClient, key: str) -> None:
        self.client = client
        self.key = key
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False  # a body without a length or chunks ends when the server closes
        self.got_bytes = False
        self.lost = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.lost = True  # a garbled answer: this connection is done
            if self.transport is not None:
                self.transport.close()
        self._wake()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        if self.until_eof and self.headers_done:
            self.complete = True
        self.client._forget(self)
        self._wake()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        h = self.headers
        self.until_eof = (
            "content-length" not in h
            and "chunked" not in h.get("transfer-encoding", "").lower()
            and self.status not in (204, 304)
            and not 100 <= self.status < 200
        )
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # known only until the message ends

    # -- used by the client and the response ------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until the server sends something (or closes)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self.waiter
            else:
                async with asyncio.timeout(timeout):
                    await self.waiter
        finally:
            self.waiter = None

    def send(self, data: bytes) -> None:
        self.status, self.headers, self.headers_done = 0, {}, False
        self.complete = self.keep_alive = self.until_eof = self.got_bytes = False
        self.chunks.clear()
        self.buffered = 0
        assert self.transport is not None
        self.transport.write(data)

    def take(self) -> bytes:
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered < LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """An answer's status, headers and body; `release()` or `close()` when done with it."""

    __slots__ = ("_conn", "_done", "_read_timeout", "headers", "status")

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._done = False
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        while not conn.complete:
            if conn.lost:
                raise UpstreamClosed("the engine server closed the connection mid-answer")
            await conn.wait(self._read_timeout)
        data = b"".join(conn.chunks)
        conn.chunks.clear()
        conn.buffered = 0
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives."""
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.lost:
                raise UpstreamClosed("the engine server closed the connection mid-answer")
            else:
                await conn.wait(self._read_timeout)

    def release(self) -> None:
        """Done with it: a connection whose answer was read to the end goes back to the pool."""
        if not self._done:
            self._done = True
            self._conn.client._check_in(self._conn)

    def close(self) -> None:
        """Done with it early: the connection is closed (the server stops the answer)."""
        if not self._done:
            self._conn.close()
            self.release()  # closed, so not kept: its slot is given back


class _Host:
    __slots__ = ("host", "host_header", "idle", "port", "slots", "ssl")

    def __init__(self, base_url: str, limit: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self.host_header = parts.netloc.rpartition("@")[2].encode("ascii")
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit)


class UpstreamClient:
    """Keep-alive connections to engine servers, by base URL (`http://host:port`)."""

    def __init__(self, limit_per_host: int, keepalive_s: float = 75.0) -> None:
        self.limit = limit_per_host
        self.keepalive_s = keepalive_s
        self._hosts: dict[str, _Host] = {}
        self._closed = False

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> UpstreamResponse:
        """Send the request and wait for the answer's status and headers."""
        host = self._hosts.get(base_url)
        if host is None:
            host = self._hosts[base_url] = _Host(base_url, self.limit)
        request = _request_bytes(host, path, body, headers)
        await host.slots.acquire()
        try:
            for attempt in range(2):
                conn = self._check_out(host)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(host, base_url, connect_timeout)
                try:
                    conn.send(request)
                    while not conn.headers_done:
                        if conn.lost:
                            raise UpstreamClosed("the engine server closed the connection")
                        await conn.wait(read_timeout)
                except UpstreamClosed:
                    conn.close()
                    if reused and not conn.got_bytes and attempt == 0:
                        continue  # dropped while idle: the request never reached the server
                    raise
                except BaseException:
                    conn.close()
                    raise
                return UpstreamResponse(conn, read_timeout)
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            host.slots.release()
            raise

    def _check_out(self, host: _Host) -> _Connection | None:
        now = time.monotonic()
        while host.idle:
            conn = host.idle.pop()
            if conn.reusable() and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self, host: _Host, key: str, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host.host,
                    host.port,
                    ssl=host.ssl,
                    server_hostname=host.host if host.ssl else None,
                )
        except TimeoutError:  # an OSError too: kept a timeout, not a connect error
            raise
        except OSError as exc:
            raise UpstreamConnectError(exc.errno, f"cannot connect: {exc}") from None
        return conn

    def _check_in(self, conn: _Connection) -> None:
        """A response is done with its connection: keep it for the next request, or not."""
        host = self._hosts.get(conn.key)
        if host is None:
            conn.close()
            return
        if not self._closed and conn.reusable():
            conn.idle_since = time.monotonic()
            host.idle.append(conn)
        else:
            conn.close()
        host.slots.release()

    def _forget(self, conn: _Connection) -> None:
        host = self._hosts.get(conn.key)
        if host is not None and conn in host.idle:
            host.idle.remove(conn)

    def idle_count(self, base_url: str) -> int:
        host = self._hosts.get(base_url)
        return len(host.idle) if host else 0

    async def close(self) -> None:
        self._closed = True
        for host in self._hosts.values():
            for conn in host.idle:
                conn.close()
            host.idle.clear()


def _request_bytes(host: _Host, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        b"POST ",
        path.encode("ascii"),
        b" HTTP/1.1\r\nHost: ",
        host.host_header,
        b"\r\nContent-Length: ",
        str(len(body)).encode("ascii"),
        b"\r\n",
    ]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} cannot be sent")
        lines += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
    lines += [b"\r\n", body]
    return b"".join(lines)
