"""Per-request bookkeeping: the request metrics, recorded once whatever the outcome."""

from __future__ import annotations

import time

from gateway.service import Gateway

__all__ = ["Tracker"]


class Tracker:
    __slots__ = ("_done", "gw", "route", "start", "tenant", "tune")

    def __init__(self, gw: Gateway, route: str) -> None:
        self.gw = gw
        self.route = route
        self.tenant = ""
        self.tune = "none"
        self.start = time.perf_counter()
        self._done = False

    def first_token(self) -> None:
        self.gw.metrics.ttft.labels(self.tune).observe(time.perf_counter() - self.start)

    def tokens(self, prompt: int, completion: int) -> None:
        m = self.gw.metrics.tokens
        m.labels(self.tenant, self.tune, "prompt").inc(prompt)
        m.labels(self.tenant, self.tune, "completion").inc(completion)

    def done(self, status: int) -> None:
        if self._done:
            return
        self._done = True
        m = self.gw.metrics
        m.requests.labels(self.route, self.tenant, self.tune, f"{status // 100}xx").inc()
        m.request_duration.labels(self.route, self.tune).observe(time.perf_counter() - self.start)
