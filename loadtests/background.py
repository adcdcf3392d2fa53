"""A server under test yields the CPU to whatever drives it (the tests, the soak's clients,
redis-server beside it)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["BACKGROUND_NICE", "alive", "run_in_background"]

BACKGROUND_NICE = 10


def run_in_background(pid: int) -> None:
    """Nice 10 for the process at `pid` (its engine processes, spawned later, inherit it), and,
    where the kernel shares the CPU between sessions (autogroup), for its session's group too.

    vLLM's CPU engine keeps its processes runnable (they spin on their queues between steps),
    and the servers run in their own sessions. On a 2-core machine a 0.1 s process in another
    session then waited in the run queue for seconds (p90 1.7 s, max 4.2 s over 150 runs), and
    once a CLI call in a test for over 180 s; with the server's session at nice 10: max 0.15 s.
    """
    with contextlib.suppress(ProcessLookupError):  # it exited at once: its caller says why
        os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICE)
    with contextlib.suppress(OSError):  # no autogroup in this kernel, or not ours to change
        Path(f"/proc/{pid}/autogroup").write_text(str(BACKGROUND_NICE))


def alive(pid: int) -> bool:
    """Whether the process at `pid` still runs (a zombie waiting for its reaper has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    try:
        return status.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
