"""Engine faults and shutdown on the real engine: the engine-core process is killed and the
gateway restarts it without restarting itself; SIGTERM drains in-flight streams, refuses new
work, and leaves an audit log that verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth import new_key
from loadtests.background import alive
from tests.e2e.conftest import ROOT, LiveGateway, gateway_process, write_setup

pytestmark = pytest.mark.e2e
CHAT = {"model": "support", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}


def engine_core_pids(gateway_pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    children: dict[int, list[tuple[int, str]]] = {}
    for pid, ppid, comm in rows:
        children.setdefault(int(ppid), []).append((int(pid), comm))
    found, todo = [], [gateway_pid]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            todo.append(pid)
            if comm.startswith("VLLM::"):  # the engine core and its workers
                found.append(pid)
    return found


def test_a_killed_engine_is_restarted_and_serving_resumes(demo_build, tmp_path):
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(tmp_path, keys)
    with gateway_process(tmp_path, tunes, policies, keys, new_key(), name="faults") as gw:
        c = httpx.Client(timeout=120)
        assert (
            c.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), json=CHAT).status_code
            == 200
        )
        assert gw.proc is not None
        cores = engine_core_pids(gw.proc.pid)
        assert cores, "no engine-core process found under the gateway"
        for pid in cores:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        codes = set()
        while time.monotonic() < deadline:  # the death is noticed: not ready, 503 + Retry-After
            ready = c.get(f"{gw.url}/readyz")
            if ready.status_code == 503:
                r = c.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), json=CHAT)
                codes.add(r.status_code)
                if r.status_code == 503:
                    assert r.headers["retry-after"] and r.json()["error"]["type"]
                    break
            time.sleep(0.2)
        assert 503 in codes, codes
        assert c.get(f"{gw.url}/healthz").status_code == 200  # the gateway itself lives on
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if c.get(f"{gw.url}/readyz").status_code == 200:
                break
            time.sleep(1)
        r = c.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), json=CHAT)
        assert r.status_code == 200, (r.text, gw.log_tail())
        assert gw.proc.poll() is None and engine_core_pids(gw.proc.pid)
        c.close()


def in_flight(gw: LiveGateway) -> float:
    families = text_string_to_metric_families(httpx.get(f"{gw.url}/metrics", timeout=30).text)
    return next(
        s.value for f in families for s in f.samples if s.name == "tunegate_requests_in_flight"
    )


@pytest.mark.parametrize("to_group", [False, True], ids=["gateway", "process-group"])
def test_sigterm_drains_streams_and_the_audit_log_verifies(demo_build, tmp_path, to_group):
    """`process-group`: the signal goes to the gateway's whole process group, as Ctrl-C in a
    terminal or `timeout` send it; the engine's processes are not in it (they would abort the
    streams at once), so the gateway drains and then stops the engine itself."""
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(tmp_path, keys)
    eos = json.loads((demo_build / "base" / "generation_config.json").read_text())["eos_token_id"]
    # A drain long enough for a slow machine: the test holds the requests until it has checked
    # the 503s, and the drain waits for them (the timeout itself is tested in process).
    drain = {"TUNEGATE_DRAIN_TIMEOUT_S": "120"}
    with gateway_process(tmp_path, tunes, policies, keys, new_key(), drain, name="drain") as gw:
        # Three streams in flight for certain when the signal comes, on a machine of any speed:
        # each client sends its headers and half its body, and the rest only after the signal.
        # The gateway has taken them in, so it must wait for them, then stream each answer in
        # full (the end-of-sequence token is banned: each runs to its max_tokens).
        body = {**CHAT, "max_tokens": 480, "stream": True, "temperature": 1.0, "seed": 3,
                "logit_bias": {str(eos): -100}}  # fmt: skip
        payload = json.dumps(body).encode()
        release = threading.Event()
        results: list[str] = []

        def held_body() -> Iterator[bytes]:
            yield payload[:20]
            release.wait(120)
            yield payload[20:]

        def stream() -> None:
            with httpx.stream(
                "POST",
                f"{gw.url}/v1/chat/completions",
                headers={**gw.headers(), "Content-Type": "application/json"},
                content=held_body(),
                timeout=180,
            ) as r:
                results.append(r.read().decode())

        threads = [threading.Thread(target=stream) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while in_flight(gw) < 3:
            assert time.monotonic() < deadline, gw.log_tail(40)
            time.sleep(0.05)
        assert gw.proc is not None
        engine = engine_core_pids(gw.proc.pid)
        assert engine, "no engine processes under the gateway"
        if to_group:
            os.killpg(gw.proc.pid, signal.SIGTERM)  # started in a session of its own
        else:
            gw.proc.send_signal(signal.SIGTERM)
        # While the streams drain, /readyz says the gateway is going and new requests get a 503.
        deadline = time.monotonic() + 30
        while httpx.get(f"{gw.url}/readyz", timeout=30).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), json=CHAT, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down", r.text
        assert r.headers["retry-after"]
        release.set()
        for t in threads:
            t.join(timeout=180)
        assert gw.proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
        assert len(results) == 3 and all(r.rstrip().endswith("data: [DONE]") for r in results)
        assert all('"finish_reason":"length"' in r for r in results)  # each ran to the end
        assert "EngineDeadError" not in gw.log_path.read_text(errors="replace")  # stopped by us
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in engine):  # and its processes are gone
            assert time.monotonic() < deadline, [pid for pid in engine if alive(pid)]
            time.sleep(0.2)
        audit = tmp_path / "audit-drain"
        verify = subprocess.run(
            [sys.executable, "-m", "gateway", "audit", "verify", str(audit)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
        served = [line for p in audit.glob("*.jsonl") for line in p.read_text().splitlines()
                  if '"decision":"served"' in line.replace(" ", "")]  # fmt: skip
        assert len(served) == 3
        records = [line for p in audit.glob("*.jsonl") for line in p.read_text().splitlines()
                   if '"code":"shutting_down"' in line.replace(" ", "")]  # fmt: skip
        assert len(records) == 1  # the refusal during the drain has its record too
        assert "draining 3 request(s) in flight" in gw.log_tail(400), gw.log_tail(40)
