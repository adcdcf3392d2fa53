"""A streamed response (server-sent events) that stops its stream when the client goes away.

Starlette's `StreamingResponse` does the same under an ASGI server older than spec 2.4 (uvicorn
says 2.3) with an anyio task group: the stream runs in a task of its own, started on the next
turn of the event loop, and a second task waits for the disconnect. Here the stream runs in the
request's own task, so the headers and the first event go out at once, and one plain asyncio task
watches for the disconnect and cancels the stream while it still runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

__all__ = ["EventStream"]


class EventStream:
    """An ASGI response: `events` as the body, then `on_close()` however the response ends."""

    media_type = b"text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        headers: Mapping[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.events = events
        self.on_close = on_close
        self.status_code = 200
        self.raw_headers = [(b"content-type", self.media_type)] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        streaming = True  # while True, the task waits only inside the stream below
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if streaming:  # the stream is still running: stop it where it waits
                gone = True
                task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            start = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if gone:  # the cancellation was lost on its way (Python 3.11's `wait_for` can
                    break  # drop one that comes as its inner wait ends): stop here instead
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            streaming = False
        except asyncio.CancelledError:
            streaming = False
            if not gone:
                raise
        finally:
            streaming = False
            if gone:
                task.uncancel()  # the client left: the response ends here, as it would have
            watcher.cancel()
            try:
                await self.events.aclose()  # type: ignore[attr-defined]
            finally:
                if self.on_close is not None:
                    await self.on_close()
