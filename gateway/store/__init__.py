"""The `Store` boundary: keys, bindings, rate-limit buckets, concurrency slots, change events.

`MemoryStore` is the embedded default (one process); `RedisStore` is shared by replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from gateway.store.types import (
    BindingChange,
    RateDecision,
    Rollout,
    RolloutChange,
    StoredKey,
    StoreUnavailable,
)

__all__ = [
    "BindingChange",
    "RateDecision",
    "Rollout",
    "RolloutChange",
    "Store",
    "StoreUnavailable",
    "StoredKey",
]


class Store(Protocol):
    in_process: bool  # True: operations answer without a round trip (the embedded store)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get_key(self, key_hash: str) -> StoredKey | None: ...

    async def put_key(self, key: StoredKey, *, only_if_absent: bool = False) -> bool: ...

    async def revoke_key(self, tenant: str, key_id: str) -> bool: ...

    async def list_keys(self, tenant: str) -> list[StoredKey]: ...

    async def get_binding(self, tenant: str) -> str | None: ...

    async def set_binding(self, change: BindingChange) -> None: ...

    async def binding_history(self, tenant: str, limit: int = 20) -> list[BindingChange]: ...

    async def get_rollout(self, tune: str) -> Rollout | None: ...

    async def set_rollout(self, change: RolloutChange) -> None: ...

    async def rollout_history(self, tune: str, limit: int = 20) -> list[RolloutChange]: ...

    async def take(
        self, tenant: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> RateDecision: ...

    async def refund_tokens(self, tenant: str, tpm: int, tokens: int) -> None: ...

    async def acquire_slot(self, tenant: str, limit: int, slot: str, lease_s: float) -> bool: ...

    async def release_slot(self, tenant: str, slot: str) -> None: ...

    async def slots_in_use(self, tenant: str) -> int: ...

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
        """A concurrency slot (when `limit`) and the rate buckets in one atomic step: (False,
        None) when no slot is free; else True and the rate decision (None with no rate limits).
        A refused rate decision leaves no slot behind."""
        ...

    async def finish(self, tenant: str, slot: str | None, tpm: int | None, refund: int) -> None:
        """Release the slot and give back unused reserved tokens, in one step."""
        ...

    async def publish(self, event: dict[str, str]) -> int:
        """Announce a change to every replica; returns the new state version."""
        ...

    async def version(self) -> int: ...

    def events(self) -> AsyncIterator[dict[str, str]]: ...
