"""The completion routes are dispatched by `CompletionFastPath`, not FastAPI's router, and
answer exactly as the router would: envelopes, headers, 405s, 500s, audit records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.api import create_app
from tests.api.conftest import EchoEngine, auth
from tests.api.test_audit_api import records

CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
async def routed(settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any, list[str]]]:
    """A client, the app, and the paths that reached FastAPI's router."""
    app = create_app(settings, engine=EchoEngine())
    through_router: list[str] = []
    async with app.router.lifespan_context(app):
        inner = app.router.middleware_stack

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            through_router.append(f"{scope['method']} {scope['path']}")
            await inner(scope, receive, send)

        app.router.middleware_stack = counting
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c, app, through_router


async def test_completions_skip_the_router_and_other_routes_do_not(routed):
    c, _, through_router = routed
    r = await c.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert r.headers["x-request-id"]
    r = await c.post(
        "/v1/completions", json={"model": "support", "prompt": "hi", "stream": True}, headers=auth()
    )
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert r.headers["content-type"].startswith("text/event-stream")
    assert through_router == []
    assert (await c.get("/v1/models", headers=auth())).status_code == 200
    assert through_router == ["GET /v1/models"]


async def test_other_methods_on_the_completion_paths_get_the_routers_405(routed):
    c, _, through_router = routed
    r = await c.get("/v1/chat/completions", headers=auth())
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert through_router == ["GET /v1/chat/completions"]


async def test_gateway_errors_get_their_envelope_and_headers(routed):
    c, _, _ = routed
    r = await c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = await c.post("/v1/completions", content=b"{not json", headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert r.headers["x-request-id"]


async def test_an_unexpected_error_is_the_500_envelope_and_is_audited(routed, settings, caplog):
    c, app, _ = routed
    gw = app.state.gateway

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug with a secret tg-test-acme in it")

    gw.resolve = broken
    r = await c.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "message": "The server had an error processing your request.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert "tg-test-acme" not in r.text
    assert "unhandled error" in caplog.text
    rid = r.headers["x-request-id"]
    for _ in range(100):  # a failed request's record is committed with the next batch
        mine = [rec for rec in records(settings.audit_dir) if rec["request_id"] == rid]
        if mine:
            break
        await asyncio.sleep(0.05)
    assert [(rec["status"], rec["code"]) for rec in mine] == [(500, "internal_error")]
