"""Early start: when a request may start on the engine before its admission is in, and what
the limiter counts while it does."""

from __future__ import annotations

import asyncio

import pytest

from gateway.early_start import EarlyStart
from gateway.limits import Limiter, RateLimitError
from gateway.policy import EffectiveLimits, Tenant
from gateway.store import RateDecision
from gateway.store.memory import MemoryStore


def decision(requests: int | None, tokens: int | None) -> RateDecision:
    return RateDecision(
        allowed=True,
        limit_requests=None if requests is None else 100,
        remaining_requests=requests,
        limit_tokens=None if tokens is None else 10_000,
        remaining_tokens=tokens,
    )


def test_no_early_start_before_the_store_has_shown_room():
    early = EarlyStart()
    assert not early.may_start("acme", 10, None)


def test_half_the_requests_left_start_early():
    early = EarlyStart()
    early.admitted("acme", decision(10, None))
    assert [early.may_start("acme", 1, None) for _ in range(6)] == [True] * 5 + [False]
    assert not early.may_start("other", 1, None)  # room is per tenant


def test_half_the_tokens_left_bound_early_starts():
    early = EarlyStart()
    early.admitted("acme", decision(None, 1000))  # 500 to spend early
    assert early.may_start("acme", 300, None)
    assert not early.may_start("acme", 300, None)  # 200 left
    assert early.may_start("acme", 200, None)


def test_a_tenant_near_its_limit_always_waits():
    early = EarlyStart()
    early.admitted("acme", decision(1, 5000))  # half a request left: none early
    assert not early.may_start("acme", 1, None)


def test_concurrency_holds_under_half_the_slots():
    early = EarlyStart()
    early.admitted("acme", None)  # only a concurrency limit: the store gives no rate answer
    early.holding["acme"] = 1
    assert early.may_start("acme", 1, 4)  # would hold 2 of 4
    early.holding["acme"] = 2
    assert not early.may_start("acme", 1, 4)
    assert early.may_start("acme", 1, None)  # no concurrency limit


def test_a_refusal_ends_early_starts_until_room_shows_again():
    early = EarlyStart()
    early.admitted("acme", decision(50, None))
    early.refused("acme")
    assert not early.may_start("acme", 1, None)
    early.admitted("acme", decision(50, None))
    assert early.may_start("acme", 1, None)


def test_an_old_answer_is_not_trusted(monkeypatch):
    early = EarlyStart(max_age_s=5.0)
    early.admitted("acme", decision(50, None))
    now = __import__("time").monotonic()
    monkeypatch.setattr("gateway.early_start.time.monotonic", lambda: now + 6)
    assert not early.may_start("acme", 1, None)


class RemoteStore(MemoryStore):
    """The in-memory store standing in for Redis: admission is a round trip."""

    in_process = False

    def __init__(self) -> None:
        super().__init__()
        self.admits = 0

    async def admit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.admits += 1
        await asyncio.sleep(0)
        return await super().admit(*args, **kwargs)


TENANT = Tenant("acme", frozenset(), None, EffectiveLimits(10, None, 4))
UNLIMITED = Tenant("free", frozenset(), None, EffectiveLimits(None, None, None))


async def test_the_limiter_starts_early_only_against_a_remote_store():
    assert Limiter(MemoryStore(), early_start=True).early is None
    assert Limiter(RemoteStore(), early_start=False).early is None
    limiter = Limiter(RemoteStore(), early_start=True)
    assert not limiter.starts_early(TENANT, 1)  # nothing known yet
    first = await limiter.admit(TENANT, 1)
    assert limiter.starts_early(UNLIMITED, 1) is False  # no limits: nothing to wait for
    assert limiter.starts_early(TENANT, 1)  # 9 requests left, 1 of 4 slots held
    assert limiter.early is not None and limiter.early.holding["acme"] == 2
    second = await limiter.admit(TENANT, 1, early=True)
    assert limiter.early.holding["acme"] == 2
    for admission in (first, second):
        await admission.finish(1)
        await admission.finish(1)  # a second finish changes nothing
    assert limiter.early.holding["acme"] == 0


async def test_a_refused_early_start_is_let_go_and_ends_early_starts():
    store = RemoteStore()
    limiter = Limiter(store, early_start=True)
    await (await limiter.admit(TENANT, 1)).finish(1)
    assert limiter.starts_early(TENANT, 1)
    await store.take("acme", 10, None, 1)  # another replica spends the tenant's requests
    for _ in range(8):
        await store.take("acme", 10, None, 1)
    with pytest.raises(RateLimitError):
        await limiter.admit(TENANT, 1, early=True)
    assert limiter.early is not None and limiter.early.holding["acme"] == 0
    assert not limiter.starts_early(TENANT, 1)
