"""The admission and release scripts every request runs, sent to Redis on one pipelined
connection of their own.

Every request runs two scripts, its admission and its release. Through redis-py each call costs
the gateway about 50 µs of CPU in process (a pipeline object, a connection checkout, the retry
wrapper, packing, reply callbacks), and a pipeline of four still about 22 µs a call. Here the
commands are packed by hand and written on one connection, and hiredis' parser reads the
replies, which Redis sends in the order the commands came: 16 µs a call alone, 7 in fours
(`loadtests/README.md`). A loaded gateway finishes and admits several requests in each turn of
its event loop, so `ScriptChannel.call` queues the call and the turn's calls go out in one write
at the end of the turn (a request waits no longer than that for it). Batches do not wait for
one another: a batch is written while the replies of the one before are still on their way.

Each call gets its own answer, or `StoreUnavailable`:
- **Timeouts.** Every call is bounded by the store's timeout from when it is written. Past it,
  every call still waiting is answered `StoreUnavailable` and the connection is closed (a late
  reply would be taken for the next command's); the next call opens a new one.
- **A dropped connection**, or one that cannot be opened within the timeout, answers every call
  on it the same way. A call that had been written is answered with `sent` set: Redis may still
  run it (the limiter gives back a slot such an admission may have taken, `gateway.limits`).
- **Lost scripts.** A script Redis no longer holds (a restart, `SCRIPT FLUSH`) is refused with
  `NOSCRIPT` and did not run; that call alone is sent again as `EVAL` with the script's source,
  which also loads it. Nothing runs twice.
- **A caller that stops waiting** does not stop its call: it runs, and the limiter gives back
  what an admission it no longer wanted granted.

The connection speaks RESP2 and honours the URL's user, password and database (`AUTH`, `SELECT`,
pipelined ahead of the first scripts), TLS (`rediss://`, with `ssl_cert_reqs` and `ssl_ca_certs`)
and Unix sockets (`unix://`). Everything else the store does goes through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from gateway.store.types import StoreUnavailable

__all__ = ["ScriptChannel", "pack"]


def pack(*args: Any) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Call:
    __slots__ = ("answer", "args", "deadline", "keys", "resent", "script")

    def __init__(self, script: Any, keys: list[Any], args: list[Any], answer: Any) -> None:
        self.script = script  # a redis-py `Script`: its `sha` and its source, `script`
        self.keys = keys
        self.args = args
        self.answer: asyncio.Future[Any] | None = answer  # None: a handshake command
        self.deadline = 0.0
        self.resent = False

    def command(self) -> bytes:
        if self.resent:  # the script was lost: its source, which also loads it
            return pack("EVAL", self.script.script, len(self.keys), *self.keys, *self.args)
        return pack("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


class _Replies(asyncio.Protocol):
    def __init__(self, channel: ScriptChannel) -> None:
        self.channel = channel
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.channel._answer(self, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel._lost(self, "ConnectionError")


class ScriptChannel:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._params = parse_url(url)
        self._pending: list[_Call] = []  # queued this turn
        self._waiting: deque[_Call] = deque()  # written, in the order their replies come
        self._conn: _Replies | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._backlog: list[_Call] = []  # flushed while the connection was being opened
        self._timer: asyncio.TimerHandle | None = None
        self.writes = 0  # batches written (the tests count them)

    def call(self, script: Any, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        """Queue one script call; its future resolves with the script's reply."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Call(script, keys, args, answer))
        return answer

    async def connect(self) -> None:
        """Open the connection now rather than at the first call (raises `StoreUnavailable`)."""
        if self._conn is None:
            if self._connecting is None:
                self._start_connecting()
            await asyncio.shield(self._connecting)  # type: ignore[arg-type]
            if self._conn is None:
                raise StoreUnavailable("ConnectionError")

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            if conn.transport is not None:
                conn.transport.close()  # what is written still goes out
            self._lost(conn, "ConnectionError")
        if self._connecting is not None:
            self._connecting.cancel()
        self._fail(self._pending, "ConnectionError")
        self._pending = []
        self._fail_backlog("ConnectionError")

    # -- sending ------------------------------------------------------------------------------

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self._conn is None:
            self._backlog.extend(batch)
            if self._connecting is None:
                self._start_connecting()
            return
        self._write(batch)

    def _write(self, batch: list[_Call]) -> None:
        conn = self._conn
        assert conn is not None and conn.transport is not None
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        for call in batch:
            call.deadline = deadline
        self._waiting.extend(batch)
        conn.transport.write(b"".join(call.command() for call in batch))
        self.writes += 1
        if self._timer is None:
            self._arm()

    def _start_connecting(self) -> None:
        task = asyncio.get_running_loop().create_task(self._open())
        self._connecting = task

    async def _open(self) -> None:
        p = self._params
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                if p.get("connection_class") is UnixDomainSocketConnection:
                    _, conn = await loop.create_unix_connection(lambda: _Replies(self), p["path"])
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Replies(self),
                        p.get("host", "localhost"),
                        int(p.get("port", 6379)),
                        ssl=_tls(p),
                    )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._fail_backlog(type(exc).__name__)
            return
        except BaseException:
            self._fail_backlog("ConnectionError")
            raise
        finally:
            self._connecting = None
        self._conn = conn
        hello: list[_Call] = []
        if p.get("password") is not None:
            user = [p["username"]] if p.get("username") else []
            hello.append(_Handshake(pack("AUTH", *user, p["password"])))
        if int(p.get("db") or 0):
            hello.append(_Handshake(pack("SELECT", int(p["db"]))))
        backlog, self._backlog = self._backlog, []
        if hello or backlog:
            self._write([*hello, *backlog])

    # -- replies ------------------------------------------------------------------------------

    def _answer(self, conn: _Replies, reply: Any) -> None:
        if conn is not self._conn or not self._waiting:
            return
        call = self._waiting.popleft()
        if isinstance(reply, hiredis.ReplyError):
            if call.answer is None:  # AUTH or SELECT refused: nothing on this connection works
                self._drop(conn, "AuthenticationError")
                return
            if not call.resent and str(reply).startswith("NOSCRIPT"):
                call.resent = True
                self._write([call])
                return
            if not call.answer.done():
                call.answer.set_exception(StoreUnavailable("ResponseError"))
            return
        if call.answer is not None and not call.answer.done():
            call.answer.set_result(reply)

    def _arm(self) -> None:
        if not self._waiting:
            self._timer = None
            return
        self._timer = asyncio.get_running_loop().call_at(self._waiting[0].deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._waiting and self._waiting[0].deadline <= asyncio.get_running_loop().time():
            if self._conn is not None:
                self._drop(self._conn, "TimeoutError")
            return
        self._arm()

    def _drop(self, conn: _Replies, reason: str) -> None:
        if conn.transport is not None:
            conn.transport.abort()  # its connection_lost comes later; this answers now
        self._lost(conn, reason)

    def _lost(self, conn: _Replies, reason: str) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        waiting, self._waiting = list(self._waiting), deque()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail(waiting, reason, sent=True)

    def _fail_backlog(self, reason: str) -> None:
        backlog, self._backlog = self._backlog, []
        self._fail(backlog, reason)

    @staticmethod
    def _fail(calls: list[_Call], reason: str, *, sent: bool = False) -> None:
        for call in calls:
            if call.answer is not None and not call.answer.done():
                call.answer.set_exception(StoreUnavailable(reason, sent=sent))


class _Handshake(_Call):
    """`AUTH` or `SELECT`, written ahead of the scripts on a new connection."""

    def __init__(self, packed: bytes) -> None:
        super().__init__(None, [], [], None)
        self._packed = packed

    def command(self) -> bytes:
        return self._packed


def _tls(p: dict[str, Any]) -> ssl.SSLContext | None:
    if p.get("connection_class") is not SSLConnection:
        return None
    ctx = ssl.create_default_context(cafile=p.get("ssl_ca_certs"))
    reqs = str(p.get("ssl_cert_reqs", "required")).lower()
    if reqs in ("none", "optional"):  # as redis-py reads them
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE if reqs == "none" else ssl.CERT_OPTIONAL
    return ctx
