"""Admissions and releases on their own pipelined connection to a real Redis: one loop turn's
calls in one write, each with its own answer; lost scripts, a stalled or vanished server,
callers that stop waiting, and URLs with a password and a database."""

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
    warm = s._scripts.writes
    s.writes = lambda: s._scripts.writes - warm  # type: ignore[attr-defined]
    yield s
    await s.close()


async def admit(store: RedisStore, slot: str, limit: int = 3):
    return await store.admit("acme", limit, slot, 60, None, None, 0)


async def test_one_turns_calls_go_in_one_write_each_with_its_own_answer(store):
    answers = await asyncio.gather(*(admit(store, f"r{i}") for i in range(5)))
    assert [got for got, _ in answers] == [True, True, True, False, False]  # in call order
    assert store.writes() == 1
    await asyncio.gather(*(store.finish("acme", f"r{i}", None, 0) for i in range(3)))
    assert store.writes() == 2
    assert await store.slots_in_use("acme") == 0


async def test_calls_of_later_turns_go_in_later_writes(store):
    for i in range(3):
        assert (await admit(store, f"r{i}"))[0]
    assert store.writes() == 3


async def test_scripts_redis_lost_are_loaded_and_nothing_runs_twice(store, redis_server):
    r = aioredis.Redis.from_url(redis_server.url)
    await r.script_flush()
    await r.aclose()
    answers = await asyncio.gather(*(admit(store, f"r{i}", limit=5) for i in range(4)))
    assert all(got for got, _ in answers)
    assert await store.slots_in_use("acme") == 4  # each admission ran once
    # Only the release script lost: in one write the admissions run, the releases are
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


async def test_a_dropped_connection_answers_at_once_and_the_next_call_reconnects(redis_server):
    store = RedisStore(redis_server.url, prefix=f"b{uuid.uuid4().hex[:8]}:", op_timeout_s=3.0)
    await store.start()
    r = aioredis.Redis.from_url(redis_server.url)
    pause = asyncio.ensure_future(r.execute_command("DEBUG", "SLEEP", "1"))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(admit(store, "r1"))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    redis_server.stop()  # killed: its connections drop
    with pytest.raises(StoreUnavailable):
        await waiting
    assert loop.time() - started < 1.0  # not the 3 s timeout
    pause.cancel()
    await r.aclose()
    redis_server.start()  # empty, its scripts gone: the channel reconnects, EVAL loads them
    try:
        assert (await admit(store, "r2"))[0]
        assert await store.slots_in_use("acme") == 1
    finally:
        await store.close()


async def test_a_url_with_a_user_a_password_and_a_database_is_honoured(redis_server):
    admin = aioredis.Redis.from_url(redis_server.url)
    user = f"tg{uuid.uuid4().hex[:8]}"
    await admin.execute_command("ACL", "SETUSER", user, "on", ">s3cret", "~*", "+@all")
    try:
        url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/5"
        store = RedisStore(url, prefix=f"b{uuid.uuid4().hex[:8]}:", op_timeout_s=1.0)
        await store.start()
        try:
            assert (await admit(store, "r1"))[0]
            db5 = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/5")
            assert await db5.zcard(store._k("slots", "acme")) == 1  # in database 5
            assert await admin.zcard(store._k("slots", "acme")) == 0  # not in 0
            await db5.aclose()
        finally:
            await store.close()
        wrong = RedisStore(
            f"redis://{user}:wrong@127.0.0.1:{redis_server.port}/5", op_timeout_s=1.0
        )
        with pytest.raises(StoreUnavailable):
            await wrong.admit("acme", 3, "r1", 60, None, None, 0)
        wrong._scripts.close()
        await wrong._r.aclose()
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_a_unix_socket_url(redis_server):
    if redis_server.socket_path is None:
        pytest.skip("the test folder's path is too long for a Unix socket")
    url = f"unix://{redis_server.socket_path}?db=0"
    store = RedisStore(url, prefix=f"b{uuid.uuid4().hex[:8]}:", op_timeout_s=1.0)
    await store.start()
    try:
        assert (await admit(store, "r1"))[0]
        await store.finish("acme", "r1", None, 0)
        assert await store.slots_in_use("acme") == 0
    finally:
        await store.close()
