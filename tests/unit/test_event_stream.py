"""EventStream: the streamed response that stops its stream when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.api.event_stream import EventStream


class Client:
    """An ASGI `receive`/`send` pair; `leave()` makes `receive` answer `http.disconnect`."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self._gone = asyncio.Event()

    async def receive(self) -> dict:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self._gone.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def test_sends_headers_every_event_and_the_end_then_closes_once():
    closed: list[str] = []

    async def events():
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    async def on_close():
        closed.append("closed")

    client = Client()
    await EventStream(events(), {"Cache-Control": "no-cache"}, on_close)(
        {}, client.receive, client.send
    )
    start = client.sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert (b"content-type", b"text/event-stream") in start["headers"]
    assert (b"cache-control", b"no-cache") in start["headers"]
    assert client.bodies == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert client.sent[-1]["more_body"] is False
    assert closed == ["closed"]


async def test_a_client_that_leaves_mid_wait_stops_the_stream_where_it_waits():
    stopped = asyncio.Event()
    closed: list[str] = []
    client = Client()

    async def events():
        try:
            yield b"data: first\n\n"
            client.leave()
            await asyncio.sleep(3600)  # the engine says nothing for an hour
            yield b"data: never\n\n"
        finally:
            stopped.set()

    async def on_close():
        closed.append("closed")

    task = asyncio.ensure_future(
        EventStream(events(), {}, on_close)({}, client.receive, client.send)
    )
    await asyncio.wait_for(task, 1.0)  # ends at once, without an error
    assert stopped.is_set() and closed == ["closed"]
    assert client.bodies == [b"data: first\n\n"]  # no end of body for a client that is gone
    assert task.cancelling() == 0  # the task's own cancellation was taken back


async def test_a_cancellation_lost_on_its_way_still_stops_the_stream_at_the_next_event():
    """A stream that swallows the cancellation (as `asyncio.wait_for` can in Python 3.11 when
    its inner wait ends at the same moment) is stopped after its next event instead."""
    closed: list[str] = []
    client = Client()
    made = 0

    async def events():
        nonlocal made
        while True:
            made += 1
            if made == 2:
                client.leave()
            with contextlib.suppress(asyncio.CancelledError):  # swallowed
                await asyncio.sleep(0.01)
            yield b"data: more\n\n"

    async def on_close():
        closed.append("closed")

    await asyncio.wait_for(
        EventStream(events(), {}, on_close)({}, client.receive, client.send), 1.0
    )
    assert made <= 3 and closed == ["closed"]
    assert client.bodies[-1] != b""


async def test_an_error_in_the_stream_still_closes_and_propagates():
    closed: list[str] = []

    async def events():
        yield b"data: 1\n\n"
        raise RuntimeError("boom")

    async def on_close():
        closed.append("closed")

    client = Client()
    try:
        await EventStream(events(), {}, on_close)({}, client.receive, client.send)
    except RuntimeError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("the error should propagate")
    assert closed == ["closed"]
