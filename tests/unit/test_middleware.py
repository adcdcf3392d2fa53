"""Pure ASGI middleware and the disconnect watcher, driven with raw ASGI messages."""

from __future__ import annotations

import asyncio

import orjson

from gateway.api.disconnect import ClientDisconnected, until_disconnect
from gateway.api.middleware import BodyLimitMiddleware, RequestIdMiddleware


async def echo_app(scope, receive, send):
    message = await receive()
    body = message.get("body", b"")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send(
        {
            "type": "http.response.body",
            "body": orjson.dumps(
                {"len": len(body), "rid": scope.get("state", {}).get("request_id")}
            ),
        }
    )


async def call(app, chunks, headers=()):
    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


async def test_body_limit_counts_chunked_bodies():
    app = BodyLimitMiddleware(echo_app, limit=10)
    start, body = await call(app, [b"12345", b"67890"])
    assert start["status"] == 200 and orjson.loads(body)["len"] == 10
    start, body = await call(app, [b"123456", b"789012"])
    assert start["status"] == 413
    assert orjson.loads(body)["error"]["code"] == "request_too_large"


async def test_body_limit_uses_content_length_first():
    app = BodyLimitMiddleware(echo_app, limit=10)
    start, _ = await call(app, [b""], headers=[(b"content-length", b"11")])
    assert start["status"] == 413
    start, body = await call(app, [b""], headers=[(b"content-length", b"abc")])
    assert start["status"] == 400 and b"Content-Length" in body


async def test_request_id_is_kept_when_safe_and_made_otherwise():
    app = RequestIdMiddleware(echo_app)
    start, body = await call(app, [b""], headers=[(b"x-request-id", b"abc-123")])
    assert (b"x-request-id", b"abc-123") in start["headers"]
    assert orjson.loads(body)["rid"] == "abc-123"
    start, body = await call(app, [b""], headers=[(b"x-request-id", b"bad id\n")])
    rid = dict(start["headers"])[b"x-request-id"]
    assert rid != b"bad id\n" and len(rid) == 32


async def test_until_disconnect_cancels_work():
    cancelled = asyncio.Event()

    async def work():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def receive():
        await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    try:
        await until_disconnect(receive, work())
    except ClientDisconnected:
        pass
    else:
        raise AssertionError("expected ClientDisconnected")
    assert cancelled.is_set()


async def test_until_disconnect_returns_result():
    async def receive():
        await asyncio.sleep(10)

    async def work():
        return 42

    assert await until_disconnect(receive, work()) == 42
