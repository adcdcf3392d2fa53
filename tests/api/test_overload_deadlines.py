"""Overload and deadlines: a bounded number of requests in flight (beyond it a fast 503 with
Retry-After), and first-token and whole-answer deadlines (504, the engine's work cancelled)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.api import create_app
from gateway.audit.file_sink import audit_files
from gateway.engine import EngineRequest, Output
from tests.api.conftest import EchoEngine, auth


def records(folder):
    import json

    return [json.loads(line) for f in audit_files(folder) for line in f.read_text().splitlines()]


BODY = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def make_client(settings):
    async def make(engine: EchoEngine, **overrides: object):
        app = create_app(settings.model_copy(update=overrides), engine=engine)
        return app

    return make


async def serve(app):
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30)


async def test_beyond_the_inflight_bound_a_fast_503(make_client, settings):
    engine = EchoEngine()
    gate = engine.hold()
    app = await make_client(engine, max_inflight=2)
    async with app.router.lifespan_context(app), await serve(app) as c:
        held = [asyncio.create_task(c.post("/v1/chat/completions", json=BODY, headers=auth()))
                for _ in range(2)]  # fmt: skip
        gw = app.state.gateway
        while gw.active < 2:
            await asyncio.sleep(0.01)
        r = await c.post("/v1/chat/completions", json=BODY, headers=auth())
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert r.headers["retry-after"] == "1" and r.headers["x-request-id"]
        # refused at the door: before the key or the body is looked at
        wrong = {"Authorization": "Bearer tg-wrong"}
        r = await c.post("/v1/completions", content=b"{not json", headers=wrong)
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert (await c.get("/v1/models", headers=auth())).status_code == 200  # not bounded
        gate.set()
        assert [(await t).status_code for t in held] == [200, 200]
        assert gw.active == 0 and gw.entered == 0
        assert (await c.post("/v1/chat/completions", json=BODY, headers=auth())).status_code == 200
        metrics = (await c.get("/metrics")).text
        assert 'tunegate_rate_limited_total{reason="overloaded",tenant=""} 2.0' in metrics
        assert 'route="completions",status="5xx",tenant="",tune="none",version=""} 1.0' in metrics
    # each refusal left its audit record, like every other answer
    refused = [r for r in records(settings.audit_dir) if r["code"] == "overloaded"]
    assert [(r["route"], r["status"], r["tenant"]) for r in refused] == [
        ("chat", 503, None),
        ("completions", 503, None),
    ]


def stuck(engine: EchoEngine, cancelled: list[str], delay: float | None = None) -> None:
    """Answers nothing (delay None) or a word every `delay` seconds, forever."""

    async def stream(request: EngineRequest) -> AsyncIterator[Output]:
        try:
            n = 0
            while True:
                if delay is None:
                    await asyncio.sleep(3600)
                await asyncio.sleep(delay)
                n += 1
                yield Output(" word", n, 3, None)
        finally:
            cancelled.append(request.request_id)

    engine.stream = stream  # type: ignore[method-assign]


@pytest.mark.parametrize("stream", [False, True])
async def test_no_first_token_in_time_is_a_504(make_client, stream):
    engine, cancelled = EchoEngine(), []
    stuck(engine, cancelled)
    app = await make_client(engine, first_token_timeout_s=0.3)
    async with app.router.lifespan_context(app), await serve(app) as c:
        r = await c.post("/v1/chat/completions", json={**BODY, "stream": stream}, headers=auth())
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "deadline_exceeded"
        assert len(cancelled) == 1 and app.state.gateway.active == 0
        assert app.state.gateway.inflight["support@1"] == 0


async def test_an_answer_past_the_request_deadline(make_client):
    engine, cancelled = EchoEngine(), []
    stuck(engine, cancelled, delay=0.05)
    app = await make_client(engine, request_timeout_s=0.5, first_token_timeout_s=5)
    async with app.router.lifespan_context(app), await serve(app) as c:
        r = await c.post("/v1/chat/completions", json=BODY, headers=auth())
        assert r.status_code == 504 and "longer than" in r.json()["error"]["message"]
        async with c.stream(
            "POST", "/v1/chat/completions", json={**BODY, "stream": True}, headers=auth()
        ) as s:
            text = (await s.aread()).decode()
        assert s.status_code == 200  # headers went out with the first token
        assert "deadline_exceeded" in text and "[DONE]" not in text
        assert len(cancelled) == 2 and app.state.gateway.active == 0


async def test_a_noisy_tenant_at_ten_times_its_limit_leaves_others_untouched(settings):
    from gateway.auth import hash_key
    from tests.api.conftest import KEYS

    (settings.policies_dir / "tenants.yaml").write_text(
        "tenants:\n"
        f"  - name: acme\n    keys: [{{id: acme-1, sha256: {hash_key(KEYS['acme'])}}}]\n"
        "    tunes: [support]\n    limits: {requests_per_minute: 20}\n"
        f"  - name: narrow\n    keys: [{{id: narrow-1, sha256: {hash_key(KEYS['narrow'])}}}]\n"
        "    tunes: [support]\n"
    )
    engine = EchoEngine()
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app), await serve(app) as c:
        noisy = [
            c.post("/v1/chat/completions", json=BODY, headers=auth("acme")) for _ in range(200)
        ]
        quiet = [
            c.post("/v1/chat/completions", json=BODY, headers=auth("narrow")) for _ in range(20)
        ]
        results = await asyncio.gather(*noisy, *quiet)
    noisy_codes = [r.status_code for r in results[:200]]
    assert noisy_codes.count(200) == 20 and noisy_codes.count(429) == 180
    assert [r.status_code for r in results[200:]] == [200] * 20


async def test_the_servers_protocol_refuses_at_the_door_for_this_app(settings, caplog):
    """`tunegate serve` runs uvicorn with `HTTP_PROTOCOL`: each connection's protocol finds the
    gateway behind uvicorn's own wrapping of the app, or it would hand refusals to the app
    (answered the same, at several times the cost; `tests/e2e/test_door.py` checks the answers)."""
    import uvicorn
    from uvicorn.server import ServerState

    from gateway.api.door import HTTP_PROTOCOL, DoorProtocol

    app = create_app(settings, engine=EchoEngine())
    for proxy_headers in (True, False):
        config = uvicorn.Config(app, http=HTTP_PROTOCOL, proxy_headers=proxy_headers)
        config.load()
        assert config.http_protocol_class is DoorProtocol
        protocol = DoorProtocol(config=config, server_state=ServerState(), app_state={})
        assert protocol.gateway is app.state.gateway
    # at the bound, the protocol answers a completion request itself: no task for the app
    written: list[bytes] = []

    class Transport(asyncio.Transport):
        def write(self, data: bytes) -> None:  # type: ignore[override]
            written.append(bytes(data))

        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

    app.state.gateway.max_inflight = 0
    protocol.connection_made(Transport())
    protocol.data_received(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert not protocol.tasks and len(written) == 1
    assert written[0].startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert written[0].endswith(b'"code":"overloaded"}}')
    # a refusal whose record fails is still answered (and the failure logged)
    gw = app.state.gateway
    submit, gw.audit.submit = gw.audit.submit, None  # calling it raises TypeError
    with caplog.at_level(logging.ERROR, logger="gateway.api.door"):
        protocol.data_received(
            b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"
        )
    gw.audit.submit = submit
    assert len(written) == 2 and written[1].startswith(b"HTTP/1.1 503 ")
    assert "refusal not recorded" in caplog.text
    del written[1]
    protocol.data_received(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert len(protocol.tasks) == 1  # other routes go to the app
    await asyncio.gather(*protocol.tasks)
    assert written[1].startswith(b"HTTP/1.1 401 ")  # answered by the app (no key given)
    protocol.connection_lost(None)
