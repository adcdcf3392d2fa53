"""A caller cancelled while the store is admitting it (a client that gave up) leaves nothing
held: the slot and the reserved tokens go back once the store's answer is in."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def cancel_while_admitting(limiter: Limiter, store: Any, tokens: int) -> None:
    """A caller that gives up while the store is admitting it; then the store's answer comes."""
    task = asyncio.create_task(limiter.admit(TENANT, tokens))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    store.let_go.set()  # the store's answer arrives after the caller left


async def test_a_cancelled_admission_gives_back_what_the_store_granted():
    store = SlowStore()
    limiter = Limiter(store)
    await cancel_while_admitting(limiter, store, 100)
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
    await cancel_while_admitting(limiter, store, 1)
    await asyncio.sleep(0.05)
    assert store.finished == []  # refused: nothing to give back
    for admission in held:
        await admission.finish(1)
    assert await store.slots_in_use("acme") == 0


class StalledStore(MemoryStore):
    """`admit` times out after it was sent (`sent`) or before (`not sent`); when it was sent,
    it still runs and takes the slot, as a stalled Redis does once the stall ends."""

    def __init__(self, sent: bool) -> None:
        super().__init__()
        self.sent = sent
        self.released: list[str] = []

    async def admit(self, tenant, limit, slot, *args, **kwargs):  # type: ignore[no-untyped-def]
        from gateway.store import StoreUnavailable

        if self.sent:
            await super().admit(tenant, limit, slot, *args, **kwargs)
        raise StoreUnavailable("TimeoutError", sent=self.sent)

    async def release_slot(self, tenant: str, slot: str) -> None:
        self.released.append(slot)
        await super().release_slot(tenant, slot)


@pytest.mark.parametrize("sent", [True, False])
async def test_a_slot_an_admission_took_after_timing_out_is_given_back(sent):
    from gateway.limits import LimiterDownError

    store = StalledStore(sent)
    fallbacks: list[tuple[str, str]] = []
    limiter = Limiter(store, on_fallback=lambda op, d: fallbacks.append((op, d)))
    limiter.late_releases_s = (0.01, 0.05)
    with pytest.raises(LimiterDownError):
        await limiter.admit(TENANT, 1)
    assert await store.slots_in_use("acme") == (1 if sent else 0)
    await asyncio.sleep(0.2)
    assert await store.slots_in_use("acme") == 0
    # sent: released at each mark (the first may come before the stalled command ran)
    assert len(store.released) == (2 if sent else 0) and len(set(store.released)) <= 1
    assert fallbacks == [("rate_limit", "fail_closed")]


async def test_a_cancelled_admission_whose_sent_call_timed_out_is_given_back_later():
    """The caller left, then the store's call failed after it was sent: it may still have run,
    so its slot is given back later, as for a caller still waiting."""
    from gateway.store import StoreUnavailable

    class LateFailure(StalledStore):
        async def admit(self, tenant, limit, slot, *args, **kwargs):  # type: ignore[no-untyped-def]
            await self.let_go.wait()
            await MemoryStore.admit(self, tenant, limit, slot, *args, **kwargs)
            raise StoreUnavailable("TimeoutError", sent=True)

    store = LateFailure(sent=True)
    store.let_go = asyncio.Event()
    limiter = Limiter(store)
    limiter.late_releases_s = (0.01, 0.05)
    await cancel_while_admitting(limiter, store, 1)
    await asyncio.sleep(0.2)
    assert await store.slots_in_use("acme") == 0 and len(store.released) == 2


async def test_late_releases_are_bounded_and_stopped_at_close(monkeypatch):
    import gateway.limits as limits

    monkeypatch.setattr(limits, "MAX_LATE_RELEASES", 2)
    store = StalledStore(sent=True)
    fallbacks: list[tuple[str, str]] = []
    limiter = Limiter(store, on_fallback=lambda op, d: fallbacks.append((op, d)))
    many = Tenant("many", frozenset(), None, EffectiveLimits(None, None, 10))
    for _ in range(3):
        with pytest.raises(limits.LimiterDownError):
            await limiter.admit(many, 1)
    assert len(limiter._late) == 2  # the third is left to its lease
    assert ("release", "lease_expiry") in fallbacks
    await limiter.close()
    assert not limiter._late and not store.released


async def test_a_release_that_failed_is_tried_again_later():
    from gateway.store import StoreUnavailable

    class FailingRelease(StalledStore):
        async def finish(self, tenant, slot, tpm, refund):  # type: ignore[no-untyped-def]
            raise StoreUnavailable("TimeoutError", sent=True)

        async def admit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return await MemoryStore.admit(self, *args, **kwargs)

    store = FailingRelease(sent=True)
    fallbacks: list[tuple[str, str]] = []
    limiter = Limiter(store, on_fallback=lambda op, d: fallbacks.append((op, d)))
    limiter.late_releases_s = (0.01, 0.05)
    admission = await limiter.admit(TENANT, 1)
    assert await store.slots_in_use("acme") == 1
    await admission.finish(1)
    await asyncio.sleep(0.2)
    assert await store.slots_in_use("acme") == 0 and store.released == [admission.slot] * 2
    assert not fallbacks  # given back: no lease expiry to count
