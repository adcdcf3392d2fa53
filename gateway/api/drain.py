"""Graceful shutdown on SIGTERM: drain first, then let uvicorn stop.

uvicorn on its own stops listening at once, so a request sent during the drain meets a refused
connection. Here the first SIGTERM starts a drain instead: `/readyz` turns 503 (a load balancer
stops sending), new completion requests get a 503 `shutting_down` with `Retry-After` (counted and
audited, by `InflightGate`), and the requests in flight, streams included, run to their end.
When none is left, or after `TUNEGATE_DRAIN_TIMEOUT_S`, uvicorn's own handler gets the signal and
shuts down as usual: open connections close, the lifespan ends, the audit log is flushed. A
second SIGTERM (or SIGINT) skips the wait.

Installed from the app's lifespan, inside uvicorn's signal capture, so it works the same in each
worker process; the previous handler is put back when the lifespan ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
from collections.abc import Callable
from typing import Any

__all__ = ["SigtermDrain"]

log = logging.getLogger(__name__)


class SigtermDrain:
    def __init__(self, gateway: Any, timeout_s: float) -> None:
        self.gateway = gateway
        self.timeout_s = timeout_s
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self) -> bool:
        """Take over SIGTERM when another Python handler (uvicorn's) holds it; else nothing."""
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False
        self._previous = previous
        self._loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_signal)
        return True

    def uninstall(self) -> None:
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._on_signal:
            signal.signal(signal.SIGTERM, self._previous)
        if self._task is not None:
            self._task.cancel()

    def _on_signal(self, sig: int, frame: Any) -> None:
        if self.gateway.draining or self._loop is None:  # the second one: stop now
            self._pass_on(sig, frame)
            return
        self.gateway.draining = True
        # a fresh context: not the one of whatever request the signal interrupted
        self._loop.call_soon_threadsafe(self._start, sig, frame, context=contextvars.Context())

    def _start(self, sig: int, frame: Any) -> None:
        self._task = asyncio.ensure_future(self._drain(sig, frame))

    async def _drain(self, sig: int, frame: Any) -> None:
        gw = self.gateway
        log.warning(
            "SIGTERM: draining %d request(s) in flight (at most %g s)", gw.entered, self.timeout_s
        )
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while gw.entered > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if gw.entered:
            log.warning("drain timeout: %d request(s) still in flight", gw.entered)
        self._pass_on(sig, frame)

    def _pass_on(self, sig: int, frame: Any) -> None:
        handler: Callable[[int, Any], None] | None = self._previous
        if handler is not None:
            handler(sig, frame)
