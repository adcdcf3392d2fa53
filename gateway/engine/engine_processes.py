"""The in-process engine's processes answer to the gateway, not to the gateway's process group.

vLLM starts its engine core as a child process (multiprocessing's `spawn` on CPU machines) in
the gateway's process group, and the core starts its worker in the same group. A signal sent to
that whole group, as Ctrl-C in a terminal, `timeout` or `kill -- -PGID` send it, reaches the engine
core as well as the gateway, and vLLM's handler there aborts every request at once: the streams
in flight are cut off, the gateway's drain has nothing left to wait for, and vLLM logs an
`EngineDeadError` traceback while the gateway shuts down.

Spawned inside `detached_spawns()`, the engine core starts through a small launcher that gives
it a process group of its own, so only the gateway hears those signals, and it stops the engine
itself once its drain is over. It stays in the gateway's session: where the kernel shares the
CPU between sessions (autogroup), a session of its own would share it with the gateway as an
equal, and the nice values that put the event loop first (`process_priority`, and the tests'
`run_in_background`) would count for nothing. Outside the terminal's foreground group, a write
to the terminal must not stop it: the launcher ignores SIGTTOU, which `exec` keeps. Since a
signal to the group no longer takes the engine down with the gateway, the launcher also asks the
kernel to kill the engine core when the gateway thread that started it ends (`PR_SET_PDEATHSIG`,
kept across `exec`): a gateway killed outright leaves no engine behind (the engine core's worker
already exits when the core does). The engine is started from an executor thread of the event
loop, which lives as long as the gateway serves. Elsewhere than Linux, and where vLLM forks its
engine core instead of spawning it (its GPU build, by default, until CUDA is initialized), the
engine stays in the gateway's group, as before.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing.resource_tracker
import multiprocessing.spawn
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["detached_spawns"]

# Runs as `sh LAUNCHER <python flags> -c <multiprocessing's bootstrap> --multiprocessing-fork`:
# a new process group, death with the parent (PR_SET_PDEATHSIG = 1; if the gateway is gone already,
# it would never come: exit), then the real interpreter with the same arguments
# (multiprocessing's pipes were made inheritable for this exec and the next).
_DETACH = (
    "import ctypes, os, signal, sys; os.setpgid(0, 0); "
    "signal.signal(signal.SIGTTOU, signal.SIG_IGN); "
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "os.getppid() == {parent} or os._exit(1); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@functools.cache
def _launcher(parent: int) -> str:
    """The launcher script, written once per gateway process (a process spawned just before a
    block ends may still be about to read it) and removed at exit."""
    folder = tempfile.mkdtemp(prefix="tunegate-engine-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    launcher = os.path.join(folder, "python")
    with open(launcher, "w") as fh:
        python = shlex.quote(sys.executable)
        detach = shlex.quote(_DETACH.format(parent=parent))
        fh.write(f'#!/bin/sh\nexec {python} -S -c {detach} "$@"\n')
    os.chmod(launcher, 0o700)
    return launcher


@contextlib.contextmanager
def detached_spawns() -> Iterator[None]:
    """Processes that multiprocessing spawns inside this block start in a process group of
    their own and die with the thread that spawned them (see the module's docstring)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    launcher = _launcher(os.getpid())
    # multiprocessing's resource tracker (it unlinks what a dead child left in /dev/shm) starts
    # with the first spawn: it starts here, as before, not through the launcher.
    multiprocessing.resource_tracker.ensure_running()
    before = multiprocessing.spawn.get_executable()
    multiprocessing.spawn.set_executable(launcher)
    try:
        yield
    finally:
        multiprocessing.spawn.set_executable(before)
