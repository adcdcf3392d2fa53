"""The engine pool's HTTP/1.1 client against real sockets: scripted servers on loopback ports
answer by length, in chunks, slowly, garbled, or close at the wrong moment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.engine import upstream_http
from gateway.engine.upstream_http import UpstreamClient, UpstreamClosed, UpstreamConnectError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Counts connections and requests; `handler(reader, writer, n)` answers request n."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.disconnected = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                self.requests.append(head + await reader.readexactly(length))
                await self.handler(reader, writer, len(self.requests))
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.disconnected.set()
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def by_length(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def post(client: UpstreamClient, url: str, read_timeout: float | None = 5.0, **kw):
    return await client.post(
        url,
        "/v1/completions",
        b'{"prompt": [1]}',
        {"Content-Type": "application/json", **kw},
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )


async def test_answers_by_length_on_one_kept_alive_connection():
    async def handler(reader, writer, n):
        writer.write(by_length(b'{"n": %d}' % n))

    server = Server(handler)
    async with server as url:
        client = UpstreamClient(limit_per_host=4)
        for n in (1, 2, 3):
            r = await post(client, url, authorization="Bearer k")
            assert r.status == 200 and r.headers["content-length"] == str(len(b'{"n": 1}'))
            assert await r.read() == b'{"n": %d}' % n
            r.release()
        assert server.connections == 1
        assert client.idle_count(url) == 1
        first = server.requests[0]
        assert first.startswith(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nauthorization: Bearer k\r\n" in first and first.endswith(b'{"prompt": [1]}')
        await client.close()


async def test_a_chunked_stream_arrives_piece_by_piece():
    go_on = asyncio.Event()

    async def handler(reader, writer, n):
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: 1\n\n")
        )
        await writer.drain()
        await go_on.wait()
        writer.write(chunk(b"data: 2\n\n") + b"0\r\n\r\n")

    async with Server(handler) as url:
        client = UpstreamClient(limit_per_host=4)
        r = await post(client, url)
        pieces = r.iter_chunks()
        assert await anext(pieces) == b"data: 1\n\n"  # before the server sends the rest
        go_on.set()
        assert [p async for p in pieces] == [b"data: 2\n\n"]
        r.release()
        assert client.idle_count(url) == 1
        await client.close()


async def test_a_connection_the_server_dropped_while_idle_is_replaced_once():
    async def handler(reader, writer, n):
        if n == 2:  # the kept-alive connection: closed without an answer
            writer.close()
            return
        writer.write(by_length(b"ok"))

    server = Server(handler)
    async with server as url:
        client = UpstreamClient(limit_per_host=4)
        r = await post(client, url)
        assert await r.read() == b"ok"
        r.release()
        r = await post(client, url)  # written on the old connection, answered on a new one
        assert r.status == 200 and await r.read() == b"ok"
        r.release()
        assert server.connections == 2 and len(server.requests) == 3
        await client.close()


async def close(reader, writer, n):
    writer.close()


async def garble(reader, writer, n):
    writer.write(b"SMTP ready\r\n\r\n")


@pytest.mark.parametrize("handler", [close, garble], ids=["closed", "garbled"])
async def test_a_new_connection_closed_or_garbled_before_the_answer_is_an_error(handler):
    async with Server(handler) as url:
        client = UpstreamClient(limit_per_host=4)
        with pytest.raises(UpstreamClosed):
            await post(client, url)
        await client.close()


async def test_nobody_listening_is_a_connect_error():
    async with Server(lambda *a: asyncio.sleep(0)) as url:
        pass  # closed: the port refuses
    client = UpstreamClient(limit_per_host=4)
    with pytest.raises(UpstreamConnectError) as caught:
        await post(client, url)
    assert isinstance(caught.value, OSError)


async def test_a_server_that_stalls_mid_answer_times_out_and_its_connection_is_dropped():
    async def handler(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a"))
        await writer.drain()
        if await reader.read() == b"":  # stalls until the client goes
            server.disconnected.set()

    server = Server(handler)
    async with server as url:
        client = UpstreamClient(limit_per_host=4)
        r = await post(client, url, read_timeout=0.2)
        pieces = r.iter_chunks()
        assert await anext(pieces) == b"a"
        with pytest.raises(TimeoutError):
            await anext(pieces)
        r.close()
        await asyncio.wait_for(server.disconnected.wait(), 2)  # the server sees it go
        assert client.idle_count(url) == 0
        await client.close()


async def test_a_stream_cut_mid_answer_is_an_error():
    async def handler(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a"))
        writer.close()

    async with Server(handler) as url:
        client = UpstreamClient(limit_per_host=4)
        r = await post(client, url)
        with pytest.raises(UpstreamClosed):
            _ = [p async for p in r.iter_chunks()]
        r.close()
        with pytest.raises(UpstreamClosed):
            await (await post(client, url)).read()
        await client.close()


async def test_a_body_that_ends_when_the_server_closes():
    async def handler(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        writer.close()

    async with Server(handler) as url:
        client = UpstreamClient(limit_per_host=4)
        r = await post(client, url)
        assert await r.read() == b"all of it"
        r.release()
        assert client.idle_count(url) == 0  # the server said close
        await client.close()


async def test_at_the_limit_a_request_waits_for_a_connection():
    async def handler(reader, writer, n):
        writer.write(by_length(b"x"))

    server = Server(handler)
    async with server as url:
        client = UpstreamClient(limit_per_host=1)
        first = await post(client, url)
        second = asyncio.ensure_future(post(client, url))
        await asyncio.sleep(0.1)
        assert not second.done()  # waits for the one connection
        await first.read()
        first.release()
        r = await asyncio.wait_for(second, 2)
        assert await r.read() == b"x"
        r.release()
        assert server.connections == 1
        await client.close()


async def test_a_cancelled_request_gives_its_connection_slot_back():
    async def handler(reader, writer, n):
        if n == 1:
            await asyncio.sleep(5)  # never answers the first
        writer.write(by_length(b"x"))

    async with Server(handler) as url:
        client = UpstreamClient(limit_per_host=1)
        waiting = asyncio.ensure_future(post(client, url))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        r = await asyncio.wait_for(post(client, url), 2)  # the slot is free again
        assert await r.read() == b"x"
        r.release()
        await client.close()


async def test_reading_pauses_while_a_slow_consumer_leaves_too_much_unread(monkeypatch):
    monkeypatch.setattr(upstream_http, "HIGH_WATER", 1000)
    monkeypatch.setattr(upstream_http, "LOW_WATER", 100)

    async def handler(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(40):
            writer.write(chunk(b"x" * 100))
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.write(b"0\r\n\r\n")

    async with Server(handler) as url:
        client = UpstreamClient(limit_per_host=1)
        r = await post(client, url)
        await asyncio.sleep(0.5)  # the server has sent it all; the client read some of it
        conn = r._conn
        assert conn.paused and conn.buffered < 4000
        body = b"".join([p async for p in r.iter_chunks()])
        assert body == b"x" * 4000 and not conn.paused
        r.release()
        await client.close()


def test_a_header_that_would_split_the_request_is_refused():
    client = UpstreamClient(limit_per_host=1)
    with pytest.raises(ValueError):
        asyncio.run(post(client, "http://127.0.0.1:9", traceparent="00-x\r\nX-Evil: 1"))
