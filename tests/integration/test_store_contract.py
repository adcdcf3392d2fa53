"""The same contract, run against `MemoryStore` and `RedisStore` (a real redis-server)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from gateway.store import BindingChange, StoredKey, StoreUnavailable
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import RedisStore


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_server):
    if request.param == "memory":
        s = MemoryStore()
    else:
        s = RedisStore(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await s.start()
    yield s
    await s.close()


def key(h: str, tenant: str = "acme", kid: str = "k1") -> StoredKey:
    return StoredKey(h * 64, kid, tenant, time.time())


async def test_keys_put_get_revoke_list(store):
    assert await store.get_key("a" * 64) is None
    assert await store.put_key(key("a"))
    assert not await store.put_key(key("a", kid="other"), only_if_absent=True)
    assert (await store.get_key("a" * 64)).key_id == "k1"
    await store.put_key(key("b", kid="k2"))
    await store.put_key(key("c", tenant="other", kid="k3"))
    assert [k.key_id for k in await store.list_keys("acme")] == ["k1", "k2"]
    assert await store.revoke_key("acme", "k2")
    assert not await store.revoke_key("acme", "k2")
    assert not await store.revoke_key("acme", "k3")
    assert (await store.get_key("b" * 64)).revoked
    assert not (await store.get_key("c" * 64)).revoked


async def test_bindings_and_history(store):
    assert await store.get_binding("acme") is None
    await store.set_binding(BindingChange("acme", None, "legal", "ops", 1.0))
    await store.set_binding(BindingChange("acme", "legal", "support", "ops2", 2.0))
    assert await store.get_binding("acme") == "support"
    history = await store.binding_history("acme")
    assert [(h.from_tune, h.to_tune, h.actor) for h in history] == [
        ("legal", "support", "ops2"),
        (None, "legal", "ops"),
    ]


async def test_request_limit_trips_exactly_at_the_limit(store):
    decisions = [await store.take("acme", 5, None, 0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining_requests for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert decisions[-1].retry_after >= 1 and decisions[-1].limit_requests == 5
    assert 0 < decisions[-1].retry_after_s <= 12.01


async def test_token_limit_trips_exactly_and_refunds(store):
    assert (await store.take("acme", None, 100, 60)).allowed
    d = await store.take("acme", None, 100, 41)
    assert not d.allowed and d.remaining_tokens == 40
    assert (await store.take("acme", None, 100, 40)).allowed
    assert not (await store.take("acme", None, 100, 1)).allowed
    await store.refund_tokens("acme", 100, 30)
    assert (await store.take("acme", None, 100, 30)).allowed
    assert not (await store.take("acme", None, 100, 1)).allowed


async def test_rejected_take_takes_nothing(store):
    assert (await store.take("acme", 2, 100, 90)).allowed
    assert not (await store.take("acme", 2, 100, 20)).allowed  # tokens short
    d = await store.take("acme", 2, 100, 5)  # the request bucket was not charged above
    assert d.allowed and d.remaining_requests == 0


async def test_buckets_refill_over_time(store):
    for _ in range(120):
        assert (await store.take("acme", 120, None, 0)).allowed  # refills 2 per second
    assert not (await store.take("acme", 120, None, 0)).allowed
    await asyncio.sleep(0.6)
    assert (await store.take("acme", 120, None, 0)).allowed


async def test_tenants_are_independent(store):
    assert (await store.take("a", 1, None, 0)).allowed
    assert not (await store.take("a", 1, None, 0)).allowed
    assert (await store.take("b", 1, None, 0)).allowed


async def test_concurrency_slots(store):
    assert await store.acquire_slot("acme", 2, "r1", 60)
    assert await store.acquire_slot("acme", 2, "r2", 60)
    assert not await store.acquire_slot("acme", 2, "r3", 60)
    assert await store.slots_in_use("acme") == 2
    await store.release_slot("acme", "r1")
    await store.release_slot("acme", "r1")  # idempotent
    assert await store.acquire_slot("acme", 2, "r3", 60)
    await store.release_slot("acme", "r2")
    await store.release_slot("acme", "r3")
    assert await store.slots_in_use("acme") == 0


async def test_slot_leases_expire(store):
    assert await store.acquire_slot("acme", 1, "crashed", 0.2)
    assert not await store.acquire_slot("acme", 1, "next", 60)
    await asyncio.sleep(0.3)
    assert await store.acquire_slot("acme", 1, "next", 60)


async def test_admit_takes_a_slot_and_the_buckets_in_one_step(store):
    got, d = await store.admit("acme", 2, "r1", 60, 2, 100, 40)
    assert got and d.allowed and d.remaining_requests == 1 and d.remaining_tokens == 60
    got, d = await store.admit("acme", 2, "r2", 60, 2, 100, 40)
    assert got and d.allowed and d.remaining_tokens == 20
    # no slot free: refused before the buckets are touched
    got, d = await store.admit("acme", 2, "r3", 60, 2, 100, 10)
    assert (got, d) == (False, None)
    await store.finish("acme", "r1", 100, 30)  # slot back, 30 of r1's 40 tokens back
    assert await store.slots_in_use("acme") == 1
    # a slot is free now but the request bucket is empty: refused, and no slot kept
    got, d = await store.admit("acme", 2, "r4", 60, 2, 100, 10)
    assert got and not d.allowed and d.retry_after >= 1
    assert await store.slots_in_use("acme") == 1
    assert (await store.take("acme", None, 100, 50)).allowed  # 20 + 30 refunded
    await store.finish("acme", "r2", 100, 0)
    assert await store.slots_in_use("acme") == 0


async def test_admit_without_rate_limits_or_slots(store):
    assert await store.admit("acme", 1, "r1", 60, None, None, 0) == (True, None)
    assert await store.admit("acme", 1, "r2", 60, None, None, 0) == (False, None)
    await store.finish("acme", "r1", None, 0)
    got, d = await store.admit("acme", None, "", 60, 1, None, 0)
    assert got and d.allowed and await store.slots_in_use("acme") == 0
    await store.finish("acme", None, None, 0)  # nothing to give back: harmless


async def test_publish_reaches_subscribers_and_bumps_version(store):
    v0 = await store.version()
    received = []

    async def listen():
        async for event in store.events():
            received.append(event)
            return

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.2)
    assert await store.publish({"kind": "binding", "tenant": "acme"}) == v0 + 1
    await asyncio.wait_for(task, 2)
    assert received == [{"kind": "binding", "tenant": "acme"}]
    assert await store.version() == v0 + 1


async def test_redis_down_raises_store_unavailable(redis_server):
    s = RedisStore("redis://127.0.0.1:1/0", op_timeout_s=0.1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await s.get_key("a" * 64)
    with pytest.raises(StoreUnavailable):
        await s.take("acme", 1, None, 0)
    assert time.monotonic() - started < 2
    await s.close()


async def test_redis_keys_have_ttls(redis_server):
    s = RedisStore(redis_server.url, prefix="ttl:")
    await s.take("acme", 5, 100, 10)
    await s.acquire_slot("acme", 1, "r1", 30)
    await s.admit("other", 1, "r1", 30, 5, 100, 10)
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_server.url)
    for name in await r.keys("ttl:rl:*") + await r.keys("ttl:slots:*"):
        assert 0 < await r.pttl(name) <= 120_000, name
    await r.aclose()
    await s.close()
