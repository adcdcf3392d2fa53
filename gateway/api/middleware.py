"""Pure ASGI middleware: request ids, the bound on requests in flight, the request-body limit."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.api.door import COMPLETION_ROUTES, door_refusal, record_refusal, request_id
from gateway.errors import (
    HeadersTooLargeError,
    InternalError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from gateway.observability.logs import request_id_var

__all__ = ["BodyLimitMiddleware", "HeadAsGet", "InflightGate", "RequestIdMiddleware", "send_error"]

log = logging.getLogger(__name__)
ASGIApp = Any
_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def send_error(send: Any, exc: Any) -> None:
    body = orjson.dumps(exc.body())
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Takes a safe `x-request-id` from the client or makes one; echoes it on the response.
    An unexpected error before the response started is logged (with the id) and answered here
    with the 500 envelope, so that answer carries the id too; the message never leaves."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        rid_text = rid.decode()
        scope.setdefault("state", {})["request_id"] = rid_text
        token = request_id_var.set(rid_text)  # every log line of this request carries it

        started = False

        async def send_with_id(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started:
                raise  # the server ends the response and logs it
            log.exception("unhandled error")
            await send_error(send_with_id, InternalError.unexpected())
        finally:
            request_id_var.reset(token)


class InflightGate:
    """Completion requests beyond the gateway's bound (`TUNEGATE_MAX_INFLIGHT`) get a 503
    `overloaded` at the door, before the body is read, the key checked or anything tokenized:
    under overload a refusal costs a small part of what an answer does, so the gateway keeps
    serving its capacity and the excess is told at once. Each refusal is still counted and
    audited like any other answer. While the gateway drains for shutdown (`SigtermDrain`), every
    new completion request gets a 503 `shutting_down` here. Under `tunegate serve` the server's
    protocol (`gateway.api.door.DoorProtocol`) makes the same check first and answers refusals
    without the app; this gate answers those that reach the app another way."""

    def __init__(self, app: ASGIApp, gateway: Any) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        route = COMPLETION_ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        gw = self.gateway
        exc = door_refusal(gw)
        if exc is not None:
            record_refusal(gw, route, scope.get("state", {}).get("request_id", ""), exc)
            await send_error(send, exc)
            return
        gw.entered += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gw.entered -= 1


class HeadAsGet:
    """HEAD is GET without the body (RFC 9110, 9.3.2), as load balancers' health checks and
    `curl -I` use it: the gateway's routes declare GET only, which made HEAD a 405. The route
    runs as for GET (a key is still checked, the request still audited) and the body is dropped
    here; the headers, `content-length` included, are GET's. A path without GET stays a 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        # a copy: the server's own scope still says HEAD, and it sends no body for that either
        await self.app({**scope, "method": "GET"}, receive, without_body)


MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024


class BodyLimitMiddleware:
    """Refuses more than `MAX_HEADERS` headers (or `MAX_HEADER_BYTES` of them) with 431, and
    bodies over `limit` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if len(headers) > MAX_HEADERS or (
                sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES
            ):
                await send_error(
                    send,
                    HeadersTooLargeError(
                        f"The request has too many or too large headers (at most {MAX_HEADERS} "
                        f"headers, {MAX_HEADER_BYTES} bytes)."
                    ),
                )
                return
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await send_error(send, InvalidRequestError("Invalid Content-Length header."))
                    return
                if int(value) > self.limit:
                    await send_error(send, self._too_large())
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await send_error(send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than the limit of {self.limit} bytes."
        )
