"""A process spawned for the engine gets a process group of its own (a signal to the gateway's
group does not reach it), stays in the gateway's session, and dies with the thread that started
it."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

from gateway.engine.engine_processes import detached_spawns

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

PR_GET_PDEATHSIG = 2


def report(queue) -> None:  # type: ignore[no-untyped-def]
    sig = ctypes.c_int()
    ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig))
    ttou = signal.getsignal(signal.SIGTTOU)
    queue.put((os.getpid(), os.getsid(0), os.getpgrp(), sig.value, ttou == signal.SIG_IGN))


def up_then_wait(queue) -> None:  # type: ignore[no-untyped-def]
    queue.put("up")
    time.sleep(600)


def spawned_report(ctx):  # type: ignore[no-untyped-def]
    queue = ctx.Queue()
    proc = ctx.Process(target=report, args=(queue,))
    proc.start()
    try:
        return queue.get(timeout=60)
    finally:
        proc.join(timeout=30)


def test_spawned_inside_its_own_group_and_dies_with_its_parent():
    ctx = multiprocessing.get_context("spawn")
    executable = multiprocessing.spawn.get_executable()
    with detached_spawns():
        pid, sid, pgid, deathsig, ttou_ignored = spawned_report(ctx)
    assert pgid == pid  # its own group: signals to the gateway's group miss it
    assert sid == os.getsid(0)  # the same session: the CPU share and nice values still hold
    assert deathsig == signal.SIGKILL and ttou_ignored
    pid, sid, pgid, deathsig, ttou_ignored = spawned_report(ctx)  # outside the block, as before
    assert pgid == os.getpgrp() and sid == os.getsid(0) and deathsig == 0
    assert multiprocessing.spawn.get_executable() == executable


def test_a_detached_process_dies_when_the_thread_that_spawned_it_ends():
    ctx = multiprocessing.get_context("spawn")
    started: list = []
    queue = ctx.Queue()

    def spawn() -> None:
        proc = ctx.Process(target=up_then_wait, args=(queue,))
        proc.start()
        started.append(proc)
        assert queue.get(timeout=60) == "up"  # running: the launcher has set its death signal

    with detached_spawns():
        thread = threading.Thread(target=spawn)
        thread.start()
        thread.join()  # the spawning thread is gone: the kernel kills what it spawned
    proc = started[0]
    try:
        proc.join(timeout=60)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
