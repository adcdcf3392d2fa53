"""Early start: a request starts on the engine while the shared store decides its admission.

An admission in Redis is one round trip, about half a millisecond on a quiet host (most of it
waking `redis-server`), spent before the engine hears of the request. Where this replica saw,
at the tenant's last admission, that the tenant has plenty of room, the request starts on the
engine beside its admission instead of after it. Nothing reaches the client before the
admission is in; a refused request's engine work is cancelled and it is answered 429 as before.

A wrong guess costs engine work that is thrown away, so the guess is kept safe: a replica
spends at most half of the room the store last reported (requests and tokens), less what it has
started early since; it holds fewer than half of the tenant's concurrency slots; the report is
at most `max_age_s` old; and any refusal ends early starts for the tenant until an admission
shows room again. A tenant at or near its limits (a noisy one) always waits for its admission.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

from gateway.store import RateDecision

__all__ = ["EarlyStart"]


@dataclass(slots=True)
class _Room:
    requests: float  # requests that may still start early (inf: no request limit)
    tokens: float  # tokens they may reserve (inf: no token limit)
    at: float  # monotonic time of the store's answer


class EarlyStart:
    """Per tenant: the room left by the last admission, and what this replica holds."""

    def __init__(self, *, max_age_s: float = 5.0, share: float = 0.5) -> None:
        self.max_age_s = max_age_s
        self.share = share
        self._room: dict[str, _Room] = {}
        self.holding: Counter[str] = Counter()  # admitted or started early, not yet finished

    def may_start(self, tenant: str, tokens: int, max_concurrent: int | None) -> bool:
        """Whether this request may start before its admission is in; if so, it takes room."""
        room = self._room.get(tenant)
        if room is None or time.monotonic() - room.at > self.max_age_s:
            return False
        if room.requests < 1 or room.tokens < tokens:
            return False
        if max_concurrent is not None and self.holding[tenant] + 1 > max_concurrent * self.share:
            return False
        room.requests -= 1
        room.tokens -= tokens
        return True

    def admitted(self, tenant: str, decision: RateDecision | None) -> None:
        """The store granted an admission; `decision` is its rate answer (None: no rate limit)."""
        if decision is None:
            self._room[tenant] = _Room(math.inf, math.inf, time.monotonic())
            return
        requests = tokens = math.inf
        if decision.limit_requests is not None:
            requests = (decision.remaining_requests or 0) * self.share
        if decision.limit_tokens is not None:
            tokens = (decision.remaining_tokens or 0) * self.share
        self._room[tenant] = _Room(requests, tokens, time.monotonic())

    def refused(self, tenant: str) -> None:
        """A refusal (or a store that did not answer): no early starts until room shows again."""
        self._room.pop(tenant, None)
