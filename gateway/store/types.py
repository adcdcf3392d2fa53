"""Records kept in a store, and the token-bucket arithmetic both stores share."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BindingChange",
    "Bucket",
    "RateDecision",
    "Rollout",
    "RolloutChange",
    "StoreUnavailable",
    "StoredKey",
]


class StoreUnavailable(Exception):
    """The shared store did not answer in time (down, slow, or restarting). `sent`: the
    command had gone out, so it may still have run (a stalled server runs it later)."""

    def __init__(self, reason: str = "", *, sent: bool = False) -> None:
        super().__init__(reason)
        self.sent = sent


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_hash: str
    key_id: str
    tenant: str
    created_at: float
    revoked: bool = False
    source: str = "api"  # "policy" for keys declared in policies/, "api" for keys made at runtime


@dataclass(frozen=True, slots=True)
class BindingChange:
    tenant: str
    from_tune: str | None
    to_tune: str
    actor: str
    at: float


@dataclass(frozen=True, slots=True)
class Rollout:
    """Which version of a tune serves: `live`, and `canary` for `weight` percent of users."""

    live: str
    canary: str | None = None
    weight: int = 0


@dataclass(frozen=True, slots=True)
class RolloutChange:
    tune: str
    action: str  # promote | canary | rollback
    before: Rollout | None
    after: Rollout
    actor: str
    at: float
    forced: bool = False

    def as_dict(self) -> dict[str, object]:
        def view(r: Rollout | None) -> dict[str, object] | None:
            return None if r is None else {"live": r.live, "canary": r.canary, "weight": r.weight}

        return {
            "tune": self.tune,
            "action": self.action,
            "before": view(self.before),
            "after": view(self.after),
            "actor": self.actor,
            "at": self.at,
            "forced": self.forced,
        }

    @staticmethod
    def from_dict(d: dict[str, object]) -> RolloutChange:
        def rollout(v: object) -> Rollout | None:
            return None if not isinstance(v, dict) else Rollout(v["live"], v["canary"], v["weight"])

        after = rollout(d["after"])
        assert after is not None
        return RolloutChange(
            str(d["tune"]),
            str(d["action"]),
            rollout(d["before"]),
            after,
            str(d["actor"]),
            float(d["at"]),
            bool(d.get("forced", False)),
        )  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float = 0.0
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float = 0.0

    @property
    def retry_after(self) -> int:
        """Whole seconds, at least 1, for the Retry-After header."""
        return max(1, math.ceil(self.retry_after_s))


@dataclass(slots=True)
class Bucket:
    """A token bucket that refills `capacity` per minute; `level` may be fractional."""

    capacity: int
    level: float
    ts: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        self.level = min(float(self.capacity), self.level + max(0.0, now - self.ts) * self.rate)
        self.ts = now

    def wait_for(self, cost: float) -> float:
        return max(0.0, (cost - self.level) / self.rate)

    def reset_s(self) -> float:
        return (self.capacity - self.level) / self.rate
