"""Refusals at the door: the two completion routes answered 503 by the HTTP protocol itself.

Beyond its bound of requests in flight (`TUNEGATE_MAX_INFLIGHT`), or while it drains for
shutdown, the gateway refuses every new completion request at once. Under overload those
refusals are most of what arrives, and what each costs comes out of the capacity left for the
requests being served. Through the ASGI app a refusal costs a task, the scope, uvicorn's and the
gateway's middleware and two `send`s on top of its own work; `DoorProtocol`, uvicorn's httptools
protocol with one check added, answers it from the parsed request line and headers instead: the
same status, body and headers (`x-request-id`, `Retry-After`, uvicorn's `date` and `server`), the
same metrics and audit record, written straight to the socket. The request's body is skipped
unread, as uvicorn skips what the app leaves, so the connection stays in step for the next one.

The check hooks `_start_asgi_task`, where uvicorn's protocol (0.45 and later) starts the app on a
request, its own or one queued behind another on the connection;
`tests/api/test_overload_deadlines.py` fails if a uvicorn release stops calling it.

`InflightGate` (the app's outermost gateway middleware) makes the same check for requests that
reach the app another way (an ASGI client in tests, another server); both use `door_refusal` and
`record_refusal`.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.api.tracker import Tracker
from gateway.errors import GatewayError, OverloadedError, ShuttingDownError
from gateway.ids import new_id
from gateway.observability.logs import request_id_var

__all__ = [
    "COMPLETION_ROUTES",
    "HTTP_PROTOCOL",
    "DoorProtocol",
    "door_refusal",
    "record_refusal",
    "request_id",
]

HTTP_PROTOCOL = "gateway.api.door:DoorProtocol"  # uvicorn's `http` setting

log = logging.getLogger(__name__)

COMPLETION_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
SAFE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")

OVERLOADED = OverloadedError(
    "The gateway is at capacity; try again shortly.", headers={"Retry-After": "1"}
)
SHUTTING_DOWN = ShuttingDownError(
    "The gateway is shutting down; send the request again.", headers={"Retry-After": "1"}
)


def door_refusal(gw: Any) -> GatewayError | None:
    """The refusal a new completion request gets now, or None when it may go in."""
    if gw.draining:
        return SHUTTING_DOWN
    if gw.entered >= gw.max_inflight:
        return OVERLOADED
    return None


def record_refusal(gw: Any, route: str, rid: str, exc: GatewayError) -> None:
    """Count a refusal and queue its audit record, as every answer is."""
    if exc is OVERLOADED:
        gw.metrics.child(gw.metrics.rate_limited, "", "overloaded").inc()
    Tracker(gw, route, rid).done(exc.status, code=exc.code)


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's `x-request-id` when it is safe to echo, else a new one."""
    for name, value in headers:
        if name == b"x-request-id" and SAFE_ID.match(value):
            return value
    return new_id().encode()


def _response_head(exc: GatewayError) -> tuple[bytes, bytes]:
    """The status line with the fixed headers, and the body, of one refusal."""
    body = orjson.dumps(exc.body())
    status = HTTPStatus(exc.status)
    head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: %d\r\n" % len(body))
    for k, v in (exc.headers or {}).items():
        head.append(f"{k.lower()}: {v}\r\n".encode())
    return b"".join(head), body


_HEADS = {exc: _response_head(exc) for exc in (OVERLOADED, SHUTTING_DOWN)}


def _gateway_of(app: Any) -> Any:
    """The gateway behind uvicorn's wrapping middleware (`app.state.gateway`), or None."""
    for _ in range(8):
        state = getattr(app, "state", None)
        gw = getattr(state, "gateway", None)
        if gw is not None:
            return gw
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class DoorProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing completion requests at the door when due."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = _gateway_of(self.app)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        gw = self.gateway
        if gw is not None and app is self.app:
            route = COMPLETION_ROUTES.get(cycle.scope["path"])
            if route is not None:
                exc = door_refusal(gw)
                if exc is not None:
                    self._refuse(cycle, gw, route, exc)
                    return
        super()._start_asgi_task(cycle, app)

    def _refuse(self, cycle: Any, gw: Any, route: str, exc: GatewayError) -> None:
        rid = request_id(cycle.scope["headers"])
        rid_text = rid.decode()
        token = request_id_var.set(rid_text)
        try:
            record_refusal(gw, route, rid_text, exc)
        except Exception:  # the answer still goes out: a connection is never left hanging
            log.exception("refusal not recorded")
        finally:
            request_id_var.reset(token)
        head, body = _HEADS[exc]
        parts = [head]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"x-request-id: ", rid, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if cycle.scope["method"] != "HEAD":  # a HEAD answer has the length but no body
            parts.append(body)
        cycle.response_started = cycle.response_complete = True
        cycle.waiting_for_100_continue = False
        self.transport.write(b"".join(parts))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
