"""A short soak (`loadtests/soak.py --minutes 1`): mixed load on the real engine with tune
switches, a redis-server, SIGTERM at the end; every criterion in its table must pass."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from gateway.audit.verify import verify_path
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e

CRITERIA = (
    "RSS growth of the gateway's process tree < 10%",
    "no failed requests",
    "the metered tenant was limited",
    "every tune switch took effect",
    "graceful drain on SIGTERM",
    "audit chain verifies",
    "audit record count equals requests answered",
    "audit 429 records equal the 429s the clients got",
)


def test_one_minute_soak_passes_every_criterion(demo_build, tmp_path):
    work = tmp_path / "soak"
    cmd = [sys.executable, "loadtests/soak.py", "--minutes", "1", "--switch-every", "15"]
    cmd += ["--workdir", str(work)]
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, f"soak failed:\n{out}\nstderr tail:\n{result.stderr[-3000:]}"
    assert "## Soak: PASS" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for criterion in CRITERIA:
        row = next((r for r in rows if r.startswith(f"| {criterion}")), None)
        assert row is not None, f"no table row for {criterion!r}:\n{out}"
        assert row.rstrip().endswith("| PASS |"), row
    sent = next(r for r in rows if r.startswith("| requests sent / answered |"))
    numbers = re.search(r"\| (\d+) / (\d+) \|", sent)
    assert numbers is not None, sent
    requests, answered = map(int, numbers.groups())
    assert requests == answered > 0
    # The audit folder the gateway left, checked here too: one record per request.
    verified = verify_path(work / "audit")
    assert verified.ok, verified.message
    assert verified.records == answered
    switches = next(r for r in rows if r.startswith("| every tune switch took effect"))
    assert re.search(r"\| ([1-9]\d*)/\1 \|", switches), switches  # at least one, all of them
    print(f"soak test took {took:.0f} s\n{out}")
