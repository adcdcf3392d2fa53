"""`MemoryStore`: the embedded, one-process store (the default with no Redis configured)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator

from gateway.store.types import (
    BindingChange,
    Bucket,
    RateDecision,
    Rollout,
    RolloutChange,
    StoredKey,
)

__all__ = ["MemoryStore", "take_both"]


def take_both(req: Bucket | None, tok: Bucket | None, tokens: int, now: float) -> RateDecision:
    """Take one request and `tokens` tokens, both or neither (the Lua script does the same)."""
    for bucket in (req, tok):
        if bucket is not None:
            bucket.refill(now)
    wait = max(req.wait_for(1) if req else 0.0, tok.wait_for(tokens) if tok else 0.0)
    allowed = wait == 0.0
    if allowed:
        if req is not None:
            req.level -= 1
        if tok is not None:
            tok.level -= tokens
    return RateDecision(
        allowed=allowed,
        retry_after_s=wait,
        limit_requests=req.capacity if req else None,
        remaining_requests=max(0, math.floor(req.level)) if req else None,
        reset_requests_s=req.reset_s() if req else 0.0,
        limit_tokens=tok.capacity if tok else None,
        remaining_tokens=max(0, math.floor(tok.level)) if tok else None,
        reset_tokens_s=tok.reset_s() if tok else 0.0,
    )


class MemoryStore:
    """Every `Store` operation on plain dicts; atomic because the event loop is single-threaded."""

    in_process = True  # answers without a round trip

    def __init__(self, clock: callable = time.monotonic) -> None:  # type: ignore[valid-type]
        self._clock = clock
        self._keys: dict[str, StoredKey] = {}
        self._bindings: dict[str, str] = {}
        self._history: dict[str, deque[BindingChange]] = defaultdict(lambda: deque(maxlen=100))
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)
        self._version = 0
        self._rollouts: dict[str, Rollout] = {}
        self._rollout_log: dict[str, deque[RolloutChange]] = defaultdict(lambda: deque(maxlen=100))
        self._subscribers: list[asyncio.Queue[dict[str, str]]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get_key(self, key_hash: str) -> StoredKey | None:
        return self._keys.get(key_hash)

    async def put_key(self, key: StoredKey, *, only_if_absent: bool = False) -> bool:
        if only_if_absent and key.key_hash in self._keys:
            return False
        self._keys[key.key_hash] = key
        return True

    async def revoke_key(self, tenant: str, key_id: str) -> bool:
        for h, key in self._keys.items():
            if key.tenant == tenant and key.key_id == key_id and not key.revoked:
                self._keys[h] = StoredKey(
                    key.key_hash, key.key_id, key.tenant, key.created_at, True, key.source
                )
                return True
        return False

    async def list_keys(self, tenant: str) -> list[StoredKey]:
        return sorted(
            (k for k in self._keys.values() if k.tenant == tenant),
            key=lambda k: (k.created_at, k.key_id),
        )

    async def get_binding(self, tenant: str) -> str | None:
        return self._bindings.get(tenant)

    async def set_binding(self, change: BindingChange) -> None:
        self._bindings[change.tenant] = change.to_tune
        self._history[change.tenant].appendleft(change)

    async def binding_history(self, tenant: str, limit: int = 20) -> list[BindingChange]:
        return list(self._history[tenant])[:limit]

    async def get_rollout(self, tune: str) -> Rollout | None:
        return self._rollouts.get(tune)

    async def set_rollout(self, change: RolloutChange) -> None:
        self._rollouts[change.tune] = change.after
        self._rollout_log[change.tune].appendleft(change)

    async def rollout_history(self, tune: str, limit: int = 20) -> list[RolloutChange]:
        return list(self._rollout_log[tune])[:limit]

    def _bucket(self, tenant: str, kind: str, capacity: int | None, now: float) -> Bucket | None:
        if capacity is None:
            return None
        bucket = self._buckets.get((tenant, kind))
        if bucket is None or bucket.capacity != capacity:
            bucket = Bucket(capacity, float(capacity), now)
            self._buckets[(tenant, kind)] = bucket
        return bucket

    async def take(
        self, tenant: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> RateDecision:
        now = self._clock()
        return take_both(
            self._bucket(tenant, "req", rpm, now),
            self._bucket(tenant, "tok", tpm, now),
            tokens,
            now,
        )

    async def refund_tokens(self, tenant: str, tpm: int, tokens: int) -> None:
        bucket = self._bucket(tenant, "tok", tpm, self._clock())
        if bucket is not None:
            bucket.refill(self._clock())
            bucket.level = min(float(bucket.capacity), bucket.level + tokens)

    def _live_slots(self, tenant: str) -> dict[str, float]:
        now = self._clock()
        slots = self._slots[tenant]
        for slot in [s for s, expiry in slots.items() if expiry <= now]:
            del slots[slot]
        return slots

    async def acquire_slot(self, tenant: str, limit: int, slot: str, lease_s: float) -> bool:
        slots = self._live_slots(tenant)
        if len(slots) >= limit:
            return False
        slots[slot] = self._clock() + lease_s
        return True

    async def release_slot(self, tenant: str, slot: str) -> None:
        self._slots[tenant].pop(slot, None)

    async def admit(
        self,
        tenant: str,
        limit: int | None,
        slot: str,
        lease_s: float,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
    ) -> tuple[bool, RateDecision | None]:
        if limit is not None and not await self.acquire_slot(tenant, limit, slot, lease_s):
            return False, None
        if rpm is None and tpm is None:
            return True, None
        decision = await self.take(tenant, rpm, tpm, tokens)
        if not decision.allowed and limit is not None:
            await self.release_slot(tenant, slot)
        return True, decision

    async def finish(self, tenant: str, slot: str | None, tpm: int | None, refund: int) -> None:
        if slot is not None:
            await self.release_slot(tenant, slot)
        if tpm is not None and refund > 0:
            await self.refund_tokens(tenant, tpm, refund)

    async def slots_in_use(self, tenant: str) -> int:
        return len(self._live_slots(tenant))

    async def publish(self, event: dict[str, str]) -> int:
        self._version += 1
        for queue in self._subscribers:
            queue.put_nowait(event)
        return self._version

    async def version(self) -> int:
        return self._version

    async def events(self) -> AsyncIterator[dict[str, str]]:
        queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)
