"""The engine's processes (every thread of every descendant) run nicer than the gateway."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from gateway.engine.process_priority import lower_children

# A child with a second thread, and a grandchild: like the engine core and its worker.
CHILD = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("up", flush=True)
time.sleep(60)
"""


def thread_nices(pid: int) -> dict[int, int]:
    return {t.id: os.getpriority(os.PRIO_PROCESS, t.id) for t in psutil.Process(pid).threads()}


@pytest.fixture
def family():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"  # both started
        (grandchild,) = psutil.Process(proc.pid).children()
        yield proc.pid, grandchild.pid
    finally:
        for child in psutil.Process(proc.pid).children():
            child.kill()
        proc.kill()
        proc.wait()


def test_every_thread_of_every_descendant_runs_nicer_than_this_process(family):
    child, grandchild = family
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert len(thread_nices(child)) >= 2  # the main thread and the sleeper
    changed = lower_children(5)
    want = min(19, own + 5)
    assert {child, grandchild} <= set(changed)
    assert set(thread_nices(child).values()) == {want}
    assert set(thread_nices(grandchild).values()) == {want}
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the caller itself is unchanged


def test_zero_leaves_them_as_they_are(family):
    child, _ = family
    before = thread_nices(child)
    assert lower_children(0) == {}
    assert thread_nices(child) == before
