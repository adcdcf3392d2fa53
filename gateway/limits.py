"""Admission: concurrency slots and request/token rate limits, with OpenAI's rate-limit headers.

When the shared store cannot answer, `fail_closed` refuses with 503 and `local` falls back to
per-replica limits (each limit divided by the replica count). Every fallback is counted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.early_start import EarlyStart
from gateway.errors import ClientError, ServerError
from gateway.ids import new_id
from gateway.policy import EffectiveLimits, Tenant
from gateway.store import RateDecision, Store, StoreUnavailable
from gateway.store.memory import MemoryStore

__all__ = ["Admission", "Limiter", "RateLimitError", "rate_headers"]

FallbackMode = Literal["fail_closed", "local"]

# After an admission that timed out once sent (the store may still run it, once a stall ends),
# or a release that failed, the concurrency slot is given back this many seconds later, and
# again at each later mark; a slot id is never reused, so a release of one never taken does
# nothing. Past the last mark, or beyond MAX_LATE_RELEASES waiting at once, the slot's lease
# expires it (counted as `release` -> `lease_expiry`).
LATE_RELEASES_S = (1.0, 10.0)
MAX_LATE_RELEASES = 10_000


class RateLimitError(ClientError):
    status = 429
    type = "rate_limit_error"


class LimiterDownError(ServerError):
    status = 503
    type = "service_unavailable_error"
    default_code = "rate_limiter_unavailable"


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `250ms`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def rate_headers(d: RateDecision) -> dict[str, str]:
    headers: dict[str, str] = {}
    if d.limit_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(d.limit_requests)
        headers["x-ratelimit-remaining-requests"] = str(d.remaining_requests)
        headers["x-ratelimit-reset-requests"] = _duration(d.reset_requests_s)
    if d.limit_tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(d.limit_tokens)
        headers["x-ratelimit-remaining-tokens"] = str(d.remaining_tokens)
        headers["x-ratelimit-reset-tokens"] = _duration(d.reset_tokens_s)
    return headers


@dataclass
class Admission:
    """An admitted request: its headers, its reservation, and how to give back what it held."""

    limiter: Limiter
    tenant: Tenant
    store: Store
    reserved_tokens: int
    slot: str | None
    headers: dict[str, str] = field(default_factory=dict)
    on_close: Callable[[], None] | None = None  # told once when the admission ends
    _closed: bool = False
    _held: bool = False  # counted in the limiter's early-start holdings

    async def finish(self, used_tokens: int | None) -> None:
        """Release the slot and refund unused reserved tokens; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close()
        if self._held and self.limiter.early is not None:
            self.limiter.early.holding[self.tenant.name] -= 1
        tpm = self.limiter.effective(self.tenant.limits, self.store).tokens_per_minute
        refund = self.reserved_tokens - (used_tokens if used_tokens is not None else 0)
        if self.slot is None and (tpm is None or refund <= 0):
            return
        await self.limiter.finish_quietly(self.store, self.tenant.name, self.slot, tpm, refund)


def _keep(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
    """Run `work` in the background, held in `tasks` until it is done."""
    task = asyncio.ensure_future(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class Limiter:
    def __init__(
        self,
        store: Store,
        *,
        mode: FallbackMode = "fail_closed",
        replicas: int = 1,
        lease_s: float = 600.0,
        on_fallback: Callable[[str, str], None] = lambda op, decision: None,
        on_reject: Callable[[str, str], None] = lambda tenant, reason: None,
        early_start: bool = False,
    ) -> None:
        self.store = store
        # Early starts help only where admission is a round trip (not the in-memory store).
        self.early = EarlyStart() if early_start and not store.in_process else None
        self.mode = mode
        self.replicas = max(1, replicas)
        self.lease_s = lease_s
        self.on_fallback = on_fallback
        self.on_reject = on_reject
        self.local = MemoryStore()
        self._giving_back: set[asyncio.Task[None]] = set()
        self.late_releases_s = LATE_RELEASES_S
        self._late: set[asyncio.Task[None]] = set()

    def _give_back(
        self,
        done: asyncio.Future[tuple[bool, RateDecision | None]],
        store: Store,
        tenant: str,
        slot: str | None,
        tpm: int | None,
        reserved: int,
    ) -> None:
        if done.cancelled():
            return  # nothing was granted
        exc = done.exception()
        if exc is not None:
            self._timed_out(exc, store, tenant, slot)
            return
        got, decision = done.result()
        if not got or (decision is not None and not decision.allowed):
            return  # refused: nothing held
        _keep(self._giving_back, self.finish_quietly(store, tenant, slot, tpm, reserved))

    def _timed_out(self, exc: BaseException, store: Store, tenant: str, slot: str | None) -> None:
        """An admission's call failed: one already sent may still run and take the slot, which
        is then given back later (whether its caller waits or has gone)."""
        if slot is not None and isinstance(exc, StoreUnavailable) and exc.sent:
            self.release_later(store, tenant, slot)

    async def finish_quietly(
        self, store: Store, tenant: str, slot: str | None, tpm: int | None, reserved: int
    ) -> None:
        """Release the slot and refund the tokens; if the store cannot, the slot goes later."""
        try:
            await store.finish(tenant, slot, tpm, reserved)
        except StoreUnavailable:
            self.release_later(store, tenant, slot)

    async def close(self) -> None:
        """Stop the late releases still waiting (their slots' leases expire them)."""
        late = list(self._late)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def release_later(self, store: Store, tenant: str, slot: str | None) -> None:
        """Give a slot back later, when giving it back now failed or its admission may have
        run after it timed out; the tokens are not refunded (whether they were is unknown)."""
        if slot is None or len(self._late) >= MAX_LATE_RELEASES:
            self.on_fallback("release", "lease_expiry")
            return
        _keep(self._late, self._late_release(store, tenant, slot))

    async def _late_release(self, store: Store, tenant: str, slot: str) -> None:
        waited = 0.0
        released = False
        for mark in self.late_releases_s:
            await asyncio.sleep(mark - waited)
            waited = mark
            try:
                await store.release_slot(tenant, slot)
                released = True
            except StoreUnavailable:
                pass
        if not released:
            self.on_fallback("release", "lease_expiry")

    def effective(self, limits: EffectiveLimits, store: Store) -> EffectiveLimits:
        if store is self.store or self.replicas == 1:
            return limits

        def share(v: int | None) -> int | None:
            return None if v is None else max(1, math.ceil(v / self.replicas))

        return EffectiveLimits(
            share(limits.requests_per_minute),
            share(limits.tokens_per_minute),
            share(limits.max_concurrent),
            limits.max_tokens,
            limits.max_prompt_tokens,
        )

    def starts_early(self, tenant: Tenant, tokens: int) -> bool:
        """Whether a request may start on the engine before its admission is in (see
        `gateway.early_start`); if so it is counted, and `admit(..., early=True)` follows."""
        limits = tenant.limits
        if self.early is None or limits.admits_freely:
            return False  # nothing to ask the store: admission takes no time
        if not self.early.may_start(tenant.name, tokens, limits.max_concurrent):
            return False
        self.early.holding[tenant.name] += 1
        return True

    async def admit(self, tenant: Tenant, tokens: int, *, early: bool = False) -> Admission:
        """Admit a request; `early`: it started on the engine already (`starts_early`)."""
        try:
            admission = await self._admit_anywhere(tenant, tokens)
        except BaseException:
            if early and self.early is not None:
                self.early.holding[tenant.name] -= 1
            raise
        if self.early is not None:
            if not early:
                self.early.holding[tenant.name] += 1
            admission._held = True
        return admission

    async def _admit_anywhere(self, tenant: Tenant, tokens: int) -> Admission:
        try:
            return await self._admit(self.store, tenant, tokens)
        except StoreUnavailable:
            if self.early is not None:
                self.early.refused(tenant.name)
            if self.mode == "fail_closed":
                self.on_fallback("rate_limit", "fail_closed")
                raise LimiterDownError(
                    "Rate limiting is unavailable; try again shortly.", headers={"Retry-After": "1"}
                ) from None
            self.on_fallback("rate_limit", "local")
            return await self._admit(self.local, tenant, tokens)

    async def _admit(self, store: Store, tenant: Tenant, tokens: int) -> Admission:
        limits = self.effective(tenant.limits, store)
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if tpm is not None and tokens > tpm:
            raise ClientError(
                f"This request needs {tokens} tokens (prompt + max_tokens), more than the "
                f"tenant's limit of {tpm} tokens per minute. Lower max_tokens.",
                param="max_tokens",
                code="tokens_exceed_limit",
            )
        limit = limits.max_concurrent
        if limits.admits_freely:
            return Admission(self, tenant, store, 0, None)
        slot = new_id() if limit is not None else None
        reserved = tokens if tpm else 0
        call = asyncio.ensure_future(
            store.admit(tenant.name, limit, slot or "", self.lease_s, rpm, tpm, reserved)
        )
        try:
            got, decision = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The caller went away (a client that gave up) while the store was answering:
            # whatever the store granted is given back as soon as its answer is in.
            call.add_done_callback(
                lambda f: self._give_back(f, store, tenant.name, slot, tpm, reserved)
            )
            raise
        except StoreUnavailable as exc:
            self._timed_out(exc, store, tenant.name, slot)
            raise
        early = self.early if store is self.store else None
        if early is not None:
            if got and (decision is None or decision.allowed):
                early.admitted(tenant.name, decision)
            else:
                early.refused(tenant.name)
        if not got:
            self.on_reject(tenant.name, "concurrency")
            raise RateLimitError(
                f"Too many concurrent requests for tenant `{tenant.name}` (limit "
                f"{limits.max_concurrent}). Retry when a request finishes.",
                code="concurrency_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        if decision is None:
            return Admission(self, tenant, store, 0, slot)
        headers = rate_headers(decision)
        if not decision.allowed:
            short_of_requests = rpm is not None and decision.remaining_requests == 0
            reason = "requests" if short_of_requests else "tokens"
            self.on_reject(tenant.name, reason)
            raise RateLimitError(
                f"Rate limit reached for tenant `{tenant.name}` on {reason} per minute. "
                f"Retry after {decision.retry_after}s.",
                code=f"{reason}_rate_limit_exceeded",
                headers={**headers, "Retry-After": str(decision.retry_after)},
            )
        return Admission(self, tenant, store, tokens if tpm else 0, slot, headers)
