"""`RedisStore`: state shared by every gateway replica (the only module that imports redis)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.store.redis_channel import ScriptChannel
from gateway.store.redis_lua import ACQUIRE_SLOT, ADMIT, FINISH, REFUND, TAKE
from gateway.store.types import (
    BindingChange,
    RateDecision,
    Rollout,
    RolloutChange,
    StoredKey,
    StoreUnavailable,
)

__all__ = ["RedisStore"]

T = TypeVar("T")
CHANNEL = "events"


class RedisStore:
    """Keys live under `prefix`; every limiter key carries a TTL; one Lua script per check."""

    in_process = False  # every operation is a round trip to Redis

    def __init__(self, url: str, *, prefix: str = "tg:", op_timeout_s: float = 0.25) -> None:
        self.url = url
        self.prefix = prefix
        self.op_timeout_s = op_timeout_s
        # Every operation is bounded by `_op`'s timer as a whole. No socket timeout (redis-py's
        # default is 5 s): with one, redis-py runs each command's send in a task of its own
        # (`wait_for`) and times its read again; a cancelled command's connection is dropped,
        # as on a timeout.
        self._r: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=op_timeout_s,
            health_check_interval=10,
        )
        self._take = self._r.register_script(TAKE)
        self._refund = self._r.register_script(REFUND)
        self._acquire = self._r.register_script(ACQUIRE_SLOT)
        self._admit = self._r.register_script(ADMIT)
        self._finish = self._r.register_script(FINISH)
        # Every request's admission and release: on a pipelined connection of their own, the
        # calls of one loop turn in one write.
        self._scripts = ScriptChannel(url, op_timeout_s)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _op(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.op_timeout_s):
                return await work
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def start(self) -> None:
        await self._op(self._r.ping())
        await self._scripts.connect()

    async def close(self) -> None:
        self._scripts.close()
        await self._r.aclose()

    # keys ---------------------------------------------------------------------------------
    @staticmethod
    def _key_from(h: str, raw: dict[bytes, bytes]) -> StoredKey | None:
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return StoredKey(
            h,
            d["key_id"],
            d["tenant"],
            float(d["created_at"]),
            d.get("revoked") == "1",
            d.get("source", "api"),
        )

    async def get_key(self, key_hash: str) -> StoredKey | None:
        return self._key_from(key_hash, await self._op(self._r.hgetall(self._k("key", key_hash))))

    async def put_key(self, key: StoredKey, *, only_if_absent: bool = False) -> bool:
        name = self._k("key", key.key_hash)
        fields = {
            "key_id": key.key_id,
            "tenant": key.tenant,
            "created_at": repr(key.created_at),
            "revoked": "1" if key.revoked else "0",
            "source": key.source,
        }
        if only_if_absent:
            created = await self._op(self._r.hsetnx(name, "key_id", key.key_id))
            if not created:
                return False
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping=fields)
            pipe.sadd(self._k("tenant-keys", key.tenant), key.key_hash)
            await self._op(pipe.execute())
        return True

    async def revoke_key(self, tenant: str, key_id: str) -> bool:
        for key in await self.list_keys(tenant):
            if key.key_id == key_id and not key.revoked:
                await self._op(self._r.hset(self._k("key", key.key_hash), "revoked", "1"))
                return True
        return False

    async def list_keys(self, tenant: str) -> list[StoredKey]:
        hashes = await self._op(self._r.smembers(self._k("tenant-keys", tenant)))
        keys = []
        for raw_hash in sorted(hashes):
            key = await self.get_key(raw_hash.decode())
            if key is not None:
                keys.append(key)
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    # bindings -----------------------------------------------------------------------------
    async def get_binding(self, tenant: str) -> str | None:
        value = await self._op(self._r.get(self._k("binding", tenant)))
        return value.decode() if value is not None else None

    async def set_binding(self, change: BindingChange) -> None:
        record = orjson.dumps(
            {
                "tenant": change.tenant,
                "from": change.from_tune,
                "to": change.to_tune,
                "actor": change.actor,
                "at": change.at,
            }
        )
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self._k("binding", change.tenant), change.to_tune)
            pipe.lpush(self._k("binding-log", change.tenant), record)
            pipe.ltrim(self._k("binding-log", change.tenant), 0, 99)
            await self._op(pipe.execute())

    async def binding_history(self, tenant: str, limit: int = 20) -> list[BindingChange]:
        raw = await self._op(self._r.lrange(self._k("binding-log", tenant), 0, limit - 1))
        out = []
        for item in raw:
            d = orjson.loads(item)
            out.append(BindingChange(d["tenant"], d["from"], d["to"], d["actor"], d["at"]))
        return out

    # tune rollouts -------------------------------------------------------------------------
    async def get_rollout(self, tune: str) -> Rollout | None:
        raw = await self._op(self._r.get(self._k("rollout", tune)))
        if raw is None:
            return None
        d = orjson.loads(raw)
        return Rollout(d["live"], d["canary"], d["weight"])

    async def set_rollout(self, change: RolloutChange) -> None:
        after = change.after
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(
                self._k("rollout", change.tune),
                orjson.dumps({"live": after.live, "canary": after.canary, "weight": after.weight}),
            )
            pipe.lpush(self._k("rollout-log", change.tune), orjson.dumps(change.as_dict()))
            pipe.ltrim(self._k("rollout-log", change.tune), 0, 99)
            await self._op(pipe.execute())

    async def rollout_history(self, tune: str, limit: int = 20) -> list[RolloutChange]:
        raw = await self._op(self._r.lrange(self._k("rollout-log", tune), 0, limit - 1))
        return [RolloutChange.from_dict(orjson.loads(item)) for item in raw]

    # limits -------------------------------------------------------------------------------
    async def take(
        self, tenant: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> RateDecision:
        keys = [self._k("rl", tenant, "req"), self._k("rl", tenant, "tok")]
        allowed, wait, rl, tl = await self._op(self._take(keys, [rpm or 0, tpm or 0, tokens]))
        return self._decision(rpm, tpm, allowed, wait, rl, tl)

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
        keys = [
            self._k("slots", tenant),
            self._k("rl", tenant, "req"),
            self._k("rl", tenant, "tok"),
        ]
        args = [limit or 0, slot, max(1, int(lease_s * 1000)), rpm or 0, tpm or 0, tokens]
        got, allowed, wait, rl, tl = await self._scripts.call(self._admit, keys, args)
        if not got:
            return False, None
        if not rpm and not tpm:
            return True, None
        return True, self._decision(rpm, tpm, allowed, wait, rl, tl)

    async def finish(self, tenant: str, slot: str | None, tpm: int | None, refund: int) -> None:
        keys = [self._k("slots", tenant), self._k("rl", tenant, "tok")]
        await self._scripts.call(self._finish, keys, [slot or "", tpm or 0, max(0, refund)])

    @staticmethod
    def _decision(
        rpm: int | None, tpm: int | None, allowed: Any, wait: Any, rl: Any, tl: Any
    ) -> RateDecision:
        wait_s, req_level, tok_level = float(wait), float(rl), float(tl)
        return RateDecision(
            allowed=bool(allowed),
            retry_after_s=wait_s,
            limit_requests=rpm,
            remaining_requests=max(0, math.floor(req_level)) if rpm else None,
            reset_requests_s=(rpm - req_level) * 60 / rpm if rpm else 0.0,
            limit_tokens=tpm,
            remaining_tokens=max(0, math.floor(tok_level)) if tpm else None,
            reset_tokens_s=(tpm - tok_level) * 60 / tpm if tpm else 0.0,
        )

    async def refund_tokens(self, tenant: str, tpm: int, tokens: int) -> None:
        await self._op(self._refund([self._k("rl", tenant, "tok")], [tpm, tokens]))

    async def acquire_slot(self, tenant: str, limit: int, slot: str, lease_s: float) -> bool:
        lease_ms = max(1, int(lease_s * 1000))
        got = await self._op(self._acquire([self._k("slots", tenant)], [limit, slot, lease_ms]))
        return bool(got)

    async def release_slot(self, tenant: str, slot: str) -> None:
        await self._op(self._r.zrem(self._k("slots", tenant), slot))

    async def slots_in_use(self, tenant: str) -> int:
        seconds, micros = await self._op(self._r.time())
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return int(await self._op(self._r.zcount(self._k("slots", tenant), now_ms, "+inf")))

    # change notifications -----------------------------------------------------------------
    async def publish(self, event: dict[str, str]) -> int:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.incr(self._k("version"))
            pipe.publish(self._k(CHANNEL), orjson.dumps(event))
            version, _ = await self._op(pipe.execute())
        return int(version)

    async def version(self) -> int:
        value = await self._op(self._r.get(self._k("version")))
        return int(value) if value is not None else 0

    async def events(self) -> AsyncIterator[dict[str, str]]:
        """Change events; raises `StoreUnavailable` when the subscription breaks."""
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        try:
            await self._op(pubsub.subscribe(self._k(CHANNEL)))
            while True:
                try:
                    message: Any = await pubsub.get_message(timeout=1.0)
                except (RedisError, OSError) as exc:
                    raise StoreUnavailable(type(exc).__name__) from None
                if message is not None and message.get("type") == "message":
                    yield orjson.loads(message["data"])
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
