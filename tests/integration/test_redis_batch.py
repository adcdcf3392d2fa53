"""Admissions and releases of one loop turn go to a real Redis as one pipeline, each with its
own answer; lost scripts, a stalled server and callers that stop waiting."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from gateway.store import StoreUnavailable
from gateway.store.redis_store import RedisStore


@pytest.fixture
async def store(redis_server):
    s = RedisStore(redis_server.url, prefix=f"b{uuid.uuid4().hex[:8]}:", op_timeout_s=0.2)
    await s.start()
    await s.admit("warm", None, "", 60, None, None, 0)  # Redis loads the scripts
    await s.finish("warm", None, None, 0)
    pipelines: list[int] = []
    make = s._r.pipeline

    def counted(*args, **kw):  # how many pipelines went out
        pipelines.append(1)
        return make(*args, **kw)

    s._r.pipeline = counted
    s.pipelines = pipelines  # type: ignore[attr-defined]
    yield s
    await s.close()


async def admit(store: RedisStore, slot: str, limit: int = 3):
    return await store.admit("acme", limit, slot, 60, None, None, 0)


async def test_one_turns_calls_go_as_one_pipeline_each_with_its_own_answer(store):
    answers = await asyncio.gather(*(admit(store, f"r{i}") for i in range(5)))
    assert [got for got, _ in answers] == [True, True, True, False, False]  # in call order
    assert len(store.pipelines) == 1
    await asyncio.gather(*(store.finish("acme", f"r{i}", None, 0) for i in range(3)))
    assert len(store.pipelines) == 2
    assert await store.slots_in_use("acme") == 0


async def test_calls_of_later_turns_go_in_later_pipelines(store):
    for i in range(3):
        assert (await admit(store, f"r{i}"))[0]
    assert len(store.pipelines) == 3


async def test_scripts_redis_lost_are_loaded_and_nothing_runs_twice(store, redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    await r.script_flush()
    await r.aclose()
    answers = await asyncio.gather(*(admit(store, f"r{i}", limit=5) for i in range(4)))
    assert all(got for got, _ in answers)
    assert await store.slots_in_use("acme") == 4  # each admission ran once
    # Only the release script lost: in one pipeline the admissions run, the releases are
    # refused; only the releases run again.
    r = aioredis.Redis.from_url(redis_server.url)
    await r.script_flush()
    await r.script_load(store._admit.script)
    await r.aclose()
    rpm = 10  # each admission that runs takes one request from the bucket

    async def counted(slot: str):
        return await store.admit("acme", 9, slot, 60, rpm, None, 0)

    await asyncio.gather(
        counted("r4"), counted("r5"), *(store.finish("acme", f"r{i}", None, 0) for i in range(4))
    )
    assert await store.slots_in_use("acme") == 2
    got, decision = await counted("r6")
    assert got and decision.remaining_requests == rpm - 3  # r4 and r5 once each, then r6


async def test_a_stalled_redis_answers_every_call_in_the_batch_unavailable(store, redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    pause = asyncio.create_task(r.execute_command("DEBUG", "SLEEP", "0.6"))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await asyncio.gather(
        *(admit(store, f"r{i}") for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    assert loop.time() - started < 0.5
    await pause
    await r.aclose()
    assert (await admit(store, "after", limit=10))[0]  # the next batch goes through


async def test_a_release_whose_caller_stopped_waiting_still_runs(store):
    assert (await admit(store, "r1", limit=1))[0]
    release = asyncio.ensure_future(store.finish("acme", "r1", None, 0))
    await asyncio.sleep(0)
    release.cancel()
    for _ in range(50):
        if await store.slots_in_use("acme") == 0:
            break
        await asyncio.sleep(0.01)
    assert await store.slots_in_use("acme") == 0
