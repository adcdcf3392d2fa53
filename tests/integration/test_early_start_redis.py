"""Early start against a real Redis: once an admission has shown room, the next requests start
on the engine while Redis admits them; a refused one is answered 429 and its engine work
cancelled (the real app, an engine double, a real redis-server)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from gateway.api import create_app
from gateway.auth import hash_key
from gateway.store.redis_store import RedisStore
from tests.api.conftest import KEYS, EchoEngine, auth, write_config
from tests.prom import samples, total

CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}
RPM = 20
OUTCOMES = ("admitted", "refused")
POLICY = f"""
tenants:
  - name: acme
    keys: [{{id: acme-1, sha256: {hash_key(KEYS["acme"])}}}]
    tunes: [support]
    limits: {{requests_per_minute: {RPM}, max_concurrent: 8}}
"""


async def start(tmp_path, redis_server, **overrides):
    settings = write_config(tmp_path)
    (settings.policies_dir / "tenants.yaml").write_text(POLICY)
    settings = settings.model_copy(update=overrides)
    engine = EchoEngine()
    prefix = f"e{uuid.uuid4().hex[:8]}:"
    app = create_app(settings, engine=engine, store=RedisStore(redis_server.url, prefix=prefix))
    return app, engine, prefix


@pytest.fixture
async def gateway(tmp_path, redis_server, request):
    app, engine, prefix = await start(tmp_path, redis_server, **getattr(request, "param", {}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        yield c, engine, prefix


def early_starts(metrics: str) -> dict[str, float]:
    scrape = samples(metrics)
    return {o: total(scrape, "tunegate_early_starts_total", outcome=o) for o in OUTCOMES}


def content(r: httpx.Response, stream: bool) -> str:
    if not stream:
        return r.json()["choices"][0]["message"]["content"]
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


async def chat(client: httpx.AsyncClient, stream: bool) -> httpx.Response:
    r = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=auth())
    await r.aread()
    return r


@pytest.mark.parametrize("stream", [False, True])
async def test_requests_start_early_once_redis_has_shown_room(gateway, stream):
    client, _, _ = gateway
    answers = [await chat(client, stream) for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert {content(r, stream) for r in answers} == {"[support] answer with several words here"}
    # Every answer carries Redis' own count, early or not: 19, 18, 17, 16 left.
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in answers]
    assert remaining == [RPM - 1, RPM - 2, RPM - 3, RPM - 4]
    counts = early_starts((await client.get("/metrics")).text)
    assert counts == {"admitted": 3.0, "refused": 0.0}  # all but the first


@pytest.mark.parametrize("gateway", [{"early_start": False}], indirect=True)
async def test_early_start_can_be_turned_off(gateway):
    client, _, _ = gateway
    for _ in range(3):
        assert (await chat(client, False)).status_code == 200
    assert early_starts((await client.get("/metrics")).text) == {"admitted": 0.0, "refused": 0.0}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refused_early_start_is_a_429_and_its_engine_work_is_cancelled(
    gateway, redis_server, stream, validate_schema
):
    client, engine, prefix = gateway
    assert (await chat(client, stream)).status_code == 200  # Redis shows 19 left
    other_replica = RedisStore(redis_server.url, prefix=prefix)
    await other_replica.start()
    try:
        for _ in range(RPM - 1):  # another replica spends the rest of the minute's requests
            assert (await other_replica.take("acme", RPM, None, 1)).allowed
    finally:
        await other_replica.close()

    gate = engine.hold()  # the engine works on the request until it is cancelled
    closed: list[str] = []
    held = engine.stream

    async def watched(request):  # type: ignore[no-untyped-def]
        try:
            async for out in held(request):
                yield out
        finally:
            closed.append(request.request_id)

    engine.stream = watched  # type: ignore[method-assign]
    r = await asyncio.wait_for(chat(client, stream), 10)
    assert r.status_code == 429
    validate_schema("ErrorResponse", r.json())
    assert r.json()["error"]["code"] == "requests_rate_limit_exceeded"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(closed) == 1  # it had started on the engine, and its stream was closed
    assert early_starts((await client.get("/metrics")).text) == {"admitted": 0.0, "refused": 1.0}

    # After a refusal the tenant waits for Redis again: refused without touching the engine.
    r = await chat(client, stream)
    assert r.status_code == 429 and len(closed) == 1
    assert early_starts((await client.get("/metrics")).text)["refused"] == 1.0
    gate.set()
