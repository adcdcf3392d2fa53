"""A caller cancelled while the store is admitting it (a client that gave up) leaves nothing
held: the slot and the reserved tokens go back once the store's answer is in."""

from __future__ import annotations

import asyncio

import pytest

from gateway.limits import Limiter
from gateway.policy import EffectiveLimits, Tenant
from gateway.store.memory import MemoryStore

TENANT = Tenant("acme", frozenset(), None, EffectiveLimits(60, 1000, 2))


class SlowStore(MemoryStore):
    """Answers `admit` only when let go, like a Redis reply still on its way."""

    def __init__(self) -> None:
        super().__init__()
        self.let_go = asyncio.Event()
        self.finished: list[tuple[str | None, int | None, int]] = []

    async def admit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await self.let_go.wait()
        return await super().admit(*args, **kwargs)

    async def finish(self, tenant, slot, tpm, refund):  # type: ignore[no-untyped-def]
        self.finished.append((slot, tpm, refund))
        await super().finish(tenant, slot, tpm, refund)


async def test_a_cancelled_admission_gives_back_what_the_store_granted():
    store = SlowStore()
    limiter = Limiter(store)
    task = asyncio.create_task(limiter.admit(TENANT, 100))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.let_go.set()  # the store's answer arrives after the caller left
    for _ in range(100):
        if store.finished:
            break
        await asyncio.sleep(0.01)
    assert await store.slots_in_use("acme") == 0
    ((slot, tpm, refund),) = store.finished
    assert slot and tpm == 1000 and refund == 100  # the whole reservation back
    assert (await store.take("acme", None, 1000, 1000)).allowed  # the tokens are all there


async def test_a_cancelled_admission_that_was_refused_gives_nothing_back():
    store = SlowStore()
    limiter = Limiter(store)
    store.let_go.set()
    held = [await limiter.admit(TENANT, 1) for _ in range(2)]  # both slots taken
    store.let_go.clear()
    task = asyncio.create_task(limiter.admit(TENANT, 1))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.let_go.set()
    await asyncio.sleep(0.05)
    assert store.finished == []  # refused: nothing to give back
    for admission in held:
        await admission.finish(1)
    assert await store.slots_in_use("acme") == 0
