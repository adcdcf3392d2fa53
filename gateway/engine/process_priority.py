"""The in-process engine's processes yield the CPU to the gateway's event loop.

vLLM's CPU engine runs in child processes (the engine core, and its worker) that stay runnable
while they wait for each other: they spin on their shared-memory queues for a second after each
step. On a machine with few cores the gateway's event loop then waited behind them for hundreds
of milliseconds at a time, long enough for a Redis call to pass its deadline and a request to be
refused with a 503. Once the engine has started, every thread of every process under the gateway
gets a nice value `by` above the gateway's own, so the event loop comes first and the engine
takes the rest.
"""

from __future__ import annotations

import logging
import os

import psutil

__all__ = ["lower_children"]

log = logging.getLogger(__name__)


def lower_children(by: int) -> dict[int, str]:
    """Set every descendant process's nice value `by` above this process's own (at most 19), on
    each of its threads: Linux keeps nice per thread. Returns the processes changed, pid to
    name."""
    if by <= 0:
        return {}
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + by)
    changed: dict[int, str] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            for thread in proc.threads():
                if os.getpriority(os.PRIO_PROCESS, thread.id) < nice:
                    os.setpriority(os.PRIO_PROCESS, thread.id, nice)
            changed[proc.pid] = proc.name()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours: leave it
    log.info("engine processes niced", extra={"nice": nice, "processes": changed})
    return changed
