"""`loadtests/profile_gateway.py`: a process' CPU split between its main thread and the rest."""

from __future__ import annotations

import os
import threading
import time

from loadtests.profile_gateway import thread_ticks, thread_use


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_busy_helper_thread_is_counted_apart_from_the_main_thread() -> None:
    pid = os.getpid()
    spun, leave = threading.Event(), threading.Event()

    def helper() -> None:  # lives on after its work, as the gateway's threads do
        _spin(0.4)
        spun.set()
        leave.wait()

    thread = threading.Thread(target=helper)
    before, began = thread_ticks(pid), time.monotonic()
    thread.start()
    spun.wait()  # the main thread sleeps meanwhile
    loop, others = thread_use(pid, before, time.monotonic() - began)
    leave.set()
    thread.join()
    assert others > 0.5  # the helper spun for nearly the whole window
    assert loop < 0.25


def test_the_main_thread_is_the_loop() -> None:
    pid = os.getpid()
    before, began = thread_ticks(pid), time.monotonic()
    _spin(0.3)
    loop, others = thread_use(pid, before, time.monotonic() - began)
    assert loop > 0.5
    assert others < 0.25
