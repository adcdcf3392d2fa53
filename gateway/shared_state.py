"""What every replica must agree on: policy, keys, tune bindings — cached locally, kept fresh
by change events from the store and a periodic version check that repairs a lost event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.auth import bearer_token, hash_key
from gateway.errors import AuthenticationError, ServerError
from gateway.policy import PolicySet, Tenant
from gateway.store import Rollout, Store, StoredKey, StoreUnavailable

__all__ = ["Principal", "SharedState", "StoreDownError"]

log = logging.getLogger(__name__)
KEY_CACHE_S = 300.0


class StoreDownError(ServerError):
    status = 503
    type = "service_unavailable_error"
    default_code = "state_unavailable"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: Tenant
    key_id: str


class SharedState:
    def __init__(
        self,
        policy: PolicySet,
        store: Store,
        *,
        version_check_s: float = 2.0,
        on_fallback: Callable[[str, str], None] = lambda op, decision: None,
        reload_policy: Callable[[], PolicySet] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.version_check_s = version_check_s
        self._on_fallback = on_fallback
        self._reload_policy = reload_policy
        self._keys: dict[str, tuple[StoredKey, float]] = {}
        self._bindings: dict[str, str | None] = {}
        self._rollouts: dict[str, Rollout | None] = {}
        self._version: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.seed_keys()
            self._version = await self.store.version()
            if self._version == 0:  # a fresh store: mark it, so a later flush shows as a drop
                self._version = await self.store.publish({"kind": "seeded"})
        except StoreUnavailable:
            log.warning("shared store unavailable at start; serving from the policy file")
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._poll())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    async def seed_keys(self) -> None:
        """The policy file's keys, added to the store unless already there (revocations kept)."""
        now = time.time()
        for key_hash, record in self.policy.keys.items():
            await self.store.put_key(
                StoredKey(key_hash, record.key_id, record.tenant, now, source="policy"),
                only_if_absent=True,
            )

    def invalidate(self, event: dict[str, str] | None = None) -> None:
        kind = (event or {}).get("kind")
        if kind == "key":
            self._keys.pop(event.get("hash", ""), None)  # type: ignore[union-attr]
        elif kind == "binding":
            self._bindings.pop(event.get("tenant", ""), None)  # type: ignore[union-attr]
        elif kind == "rollout":
            self._rollouts.pop(event.get("tune", ""), None)  # type: ignore[union-attr]
        else:
            self._keys.clear()
            self._bindings.clear()
            self._rollouts.clear()
        if kind == "policy" and self._reload_policy is not None:
            try:
                self.policy = self._reload_policy()
            except Exception:
                log.exception(
                    "policy reload announced by another replica failed; keeping the previous policy"
                )

    async def _listen(self) -> None:
        while True:
            try:
                async for event in self.store.events():
                    self.invalidate(event)
            except StoreUnavailable:
                pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("change-event listener failed")
            await asyncio.sleep(0.5)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.version_check_s)
            try:
                version = await self.store.version()
            except StoreUnavailable:
                continue
            if version != self._version:
                if version == 0 or (self._version is not None and version < self._version):
                    # The store lost its state (restart or flush): put the file's keys back.
                    with contextlib.suppress(StoreUnavailable):
                        await self.seed_keys()
                        version = await self.store.publish({"kind": "seeded"})
                self._version = version
                self.invalidate(None)

    # reads --------------------------------------------------------------------------------
    async def authenticate(self, header: str | None) -> Principal:
        key_hash = hash_key(bearer_token(header))
        record = await self._key(key_hash)
        tenant = self.policy.tenants.get(record.tenant) if record else None
        if record is None or record.revoked or tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        return Principal(tenant=tenant, key_id=record.key_id)

    async def _key(self, key_hash: str) -> StoredKey | None:
        cached = self._keys.get(key_hash)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            record = await self.store.get_key(key_hash)
        except StoreUnavailable:
            if cached is not None:
                self._on_fallback("auth", "cached")
                return cached[0]
            file_key = self.policy.keys.get(key_hash)
            if file_key is not None:
                self._on_fallback("auth", "policy_file")
                return StoredKey(key_hash, file_key.key_id, file_key.tenant, 0.0, source="policy")
            self._on_fallback("auth", "fail_closed")
            raise StoreDownError(
                "Authentication is unavailable; try again shortly.", headers={"Retry-After": "1"}
            ) from None
        if record is None:
            file_key = self.policy.keys.get(key_hash)
            if file_key is not None:  # the store lost it (flush): the file still vouches for it
                record = StoredKey(key_hash, file_key.key_id, file_key.tenant, 0.0, source="policy")
        if record is not None:
            self._keys[key_hash] = (record, now + KEY_CACHE_S)
        return record

    async def rollout(self, tune: str) -> Rollout | None:
        """The runtime rollout of a tune (None: the manifest's live version serves)."""
        if tune in self._rollouts:
            return self._rollouts[tune]
        try:
            rollout = await self.store.get_rollout(tune)
        except StoreUnavailable:
            self._on_fallback("rollout", "manifest")
            return None
        self._rollouts[tune] = rollout
        return rollout

    async def binding(self, tenant: Tenant) -> str | None:
        """The tune a tenant's `default` model runs on: the runtime binding, else the policy's."""
        if tenant.name in self._bindings:
            bound = self._bindings[tenant.name]
        else:
            try:
                bound = await self.store.get_binding(tenant.name)
            except StoreUnavailable:
                self._on_fallback("binding", "policy_default")
                return tenant.default_tune
            self._bindings[tenant.name] = bound
        return bound if bound in tenant.tunes else tenant.default_tune
