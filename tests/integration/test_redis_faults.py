"""Redis down, slow, restarted or flushed, under the real app (engine double, real Redis)."""

from __future__ import annotations

import asyncio
import random
import uuid

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.api import create_app
from gateway.auth import hash_key
from gateway.store.redis_store import RedisStore
from tests.api.conftest import ADMIN, KEYS, EchoEngine, auth, write_config

CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello there"}]}
POLICY = f"""
default:
  limits: {{requests_per_minute: 4, max_concurrent: 2}}
tenants:
  - name: acme
    keys: [{{id: acme-1, sha256: {hash_key(KEYS["acme"])}}}]
    tunes: [support, legal]
    default_tune: legal
  - name: narrow
    keys: [{{id: narrow-1, sha256: {hash_key(KEYS["narrow"])}}}]
    tunes: [support]
"""


async def make_client(tmp_path, redis_server, **overrides):
    settings = write_config(tmp_path)
    (settings.policies_dir / "tenants.yaml").write_text(POLICY)
    settings = settings.model_copy(update={"version_check_s": 0.2, **overrides})
    engine = EchoEngine()
    store = RedisStore(redis_server.url, prefix=f"f{uuid.uuid4().hex[:8]}:", op_timeout_s=0.1)
    app = create_app(settings, engine=engine, store=store)
    return app, store, engine


@pytest.fixture
async def fail_closed(tmp_path, redis_server):
    app, store, engine = await make_client(tmp_path, redis_server)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        yield c, store, engine


@pytest.fixture
async def local(tmp_path, redis_server):
    app, store, engine = await make_client(
        tmp_path, redis_server, rate_limit_fallback="local", replicas=2
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        yield c, store, engine


async def test_redis_down_fails_closed(fail_closed, redis_server, validate_schema):
    client, _, _ = fail_closed
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth())).status_code == 200
    created = await client.post(
        "/admin/tenants/narrow/keys", json={}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    unseen = created.json()["key"]
    redis_server.stop()
    try:
        r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert r.status_code == 503 and r.json()["error"]["code"] == "rate_limiter_unavailable"
        assert r.headers["retry-after"] == "1"
        validate_schema("ErrorResponse", r.json())
        r = await client.get("/v1/models", headers={"Authorization": f"Bearer {unseen}"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "state_unavailable"
        r = await client.get("/v1/models", headers={"Authorization": "Bearer tg-never-seen"})
        assert r.status_code == 503  # never 200, never 500
        # The policy file's keys still authenticate; `default` follows the policy binding.
        r = await client.get("/v1/models", headers=auth("narrow"))
        assert r.status_code == 200
        metrics = (await client.get("/metrics")).text
        for line in ('operation="rate_limit"', 'decision="fail_closed",operation="auth"'):
            assert line in metrics
    finally:
        redis_server.start()
    r = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert r.status_code == 200


async def test_local_fallback_divides_limits_by_replicas(local, redis_server):
    client, _, _ = local
    redis_server.stop()
    try:
        codes = [
            (await client.post("/v1/chat/completions", json=CHAT, headers=auth())).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]  # 4 per minute over 2 replicas = 2 here
        metrics = (await client.get("/metrics")).text
        assert (
            'tunegate_store_fallbacks_total{decision="local",operation="rate_limit"} 3.0' in metrics
        )
    finally:
        redis_server.start()


async def test_slow_redis_times_out_quickly(fail_closed, redis_server):
    client, _, _ = fail_closed
    r = aioredis.Redis.from_url(redis_server.url)
    # Block the server for a moment: every operation in that window times out.
    pause = asyncio.create_task(r.execute_command("DEBUG", "SLEEP", "0.6"))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert resp.status_code == 503 and loop.time() - started < 0.5
    await pause
    await r.aclose()
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert resp.status_code == 200


class SlowReplies:
    """A TCP relay in front of Redis whose replies can be held back: commands reach Redis (and
    run) at once, their answers come `delay_s` later, as over a slow network."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay_s = 0.0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            try:
                while data := await src.read(65536):
                    if slow and self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        for t in (pipe(client_r, redis_w, False), pipe(redis_r, client_w, True)):
            task = asyncio.create_task(t)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_timed_out_admission_gives_its_slot_back(tmp_path, redis_server):
    """An admission whose answer comes too late (503) has run in Redis and taken a slot: the
    limiter gives it back a moment later, not when its lease expires (10 minutes)."""
    relay = SlowReplies(int(redis_server.url.rsplit(":", 1)[1].split("/")[0]))
    port = await relay.start()
    settings = write_config(tmp_path)
    (settings.policies_dir / "tenants.yaml").write_text(POLICY)
    prefix = f"f{uuid.uuid4().hex[:8]}:"
    store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, op_timeout_s=0.2)
    app = create_app(settings, engine=EchoEngine(), store=store)
    direct = RedisStore(redis_server.url, prefix=prefix)  # reads Redis without the relay
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
        ):
            resp = await c.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert resp.status_code == 200  # Redis holds the scripts now
            relay.delay_s = 0.5
            resp = await c.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert resp.status_code == 503, resp.text
            assert await direct.slots_in_use("acme") == 1  # it ran: the slot is taken
            relay.delay_s = 0.0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while await direct.slots_in_use("acme") != 0:
                assert loop.time() < deadline, "the slot is still held"
                await asyncio.sleep(0.05)
            resp = await c.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert resp.status_code == 200
    finally:
        await direct.close()
        await relay.stop()


async def test_flush_recovers_without_lockout(fail_closed, redis_server):
    client, store, _ = fail_closed
    for _ in range(4):
        await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth())).status_code == 429
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushall()
    await r.aclose()
    resp = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert resp.status_code == 200  # counters start afresh; the file's key still works
    await asyncio.sleep(0.5)  # the version check notices and seeds the file's keys again
    assert await store.get_key(hash_key(KEYS["acme"])) is not None


async def test_slots_return_to_zero_under_random_faults(fail_closed):
    client, store, engine = fail_closed
    rng = random.Random(7)
    original = engine.stream

    async def flaky(request):
        fault = rng.choice(["ok", "ok", "fail_first", "fail_mid", "slow"])
        if fault == "fail_first":
            from gateway.errors import EngineUnavailableError

            raise EngineUnavailableError("engine fault")
        n = 0
        async for out in original(request):
            n += 1
            if fault == "fail_mid" and n == 3:
                from gateway.errors import EngineUnavailableError

                raise EngineUnavailableError("engine fault mid-stream")
            if fault == "slow":
                await asyncio.sleep(0.01)
            yield out

    engine.stream = flaky
    limited = {"Authorization": auth()["Authorization"]}

    async def one(i: int) -> int:
        body = {**CHAT, "stream": rng.random() < 0.5}
        try:
            r = await asyncio.wait_for(
                client.post("/v1/chat/completions", json=body, headers=limited),
                timeout=rng.choice([0.005, 5.0]),
            )
            return r.status_code
        except TimeoutError:
            return 0  # the client gave up mid-request

    statuses = []
    for _ in range(10):
        statuses += await asyncio.gather(*(one(i) for i in range(3)))
        for _ in range(100):  # a client that gave up frees its slot within a second
            if await store.slots_in_use("acme") == 0:
                break
            await asyncio.sleep(0.01)
        assert await store.slots_in_use("acme") == 0, statuses
    assert 500 not in statuses
