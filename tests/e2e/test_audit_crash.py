"""`kill -9` of a gateway under load, then a restart: the audit chain verifies and every
request a client received as 2xx has its record."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.audit.verify import verify_path
from gateway.auth import new_key
from tests.e2e.conftest import gateway_process, write_setup

pytestmark = pytest.mark.e2e


def test_kill_9_under_load_keeps_every_acknowledged_record(demo_build, tmp_path):
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(tmp_path, keys)
    admin = new_key()
    ok_ids: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    with gateway_process(tmp_path, tunes, policies, keys, admin, name="crash") as gw:
        audit = Path(gw.env["TUNEGATE_AUDIT_DIR"])

        def load(worker: int) -> None:
            n = 0
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    rid = f"w{worker}-{n}"
                    n += 1
                    try:
                        r = client.post(
                            f"{gw.url}/v1/chat/completions",
                            headers={**gw.headers(), "x-request-id": rid},
                            json={
                                "model": "support",
                                "max_tokens": 8,
                                "temperature": 0,
                                "stream": worker % 2 == 1,
                                "messages": [{"role": "user", "content": "Hello"}],
                            },
                        )
                        body = r.read()
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200 and (worker % 2 == 0 or b"[DONE]" in body):
                        with lock:
                            ok_ids.append(rid)

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(4)
        assert gw.proc is not None
        os.killpg(gw.proc.pid, signal.SIGKILL)  # the gateway and its engine, mid-load
        gw.proc.wait()
        stop.set()
        for t in threads:
            t.join()
    assert len(ok_ids) > 5
    # Restart on the same audit folder: the chain continues and still verifies.
    with gateway_process(tmp_path, tunes, policies, keys, admin, name="crash") as gw:
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=gw.headers(),
            timeout=60,
            json={
                "model": "legal",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        assert r.status_code == 200
    result = verify_path(audit)
    assert result.ok, result.message
    ids = {
        orjson.loads(line)["request_id"]
        for f in sorted(audit.glob("audit-*.jsonl"))
        for line in f.read_bytes().splitlines()
    }
    missing = [rid for rid in ok_ids if rid not in ids]
    assert not missing, missing[:5]
    # The operator's one command: exit 0 on an intact chain, 1 with the first break after an edit.
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "gateway", "audit", "verify", str(audit)]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "chain intact" in done.stdout
    first = sorted(audit.glob("audit-*.jsonl"))[0]
    lines = first.read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"route":"chat"', b'"route":"edit"')
    first.write_bytes(b"".join(x + b"\n" for x in lines))
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"{first.name}:3" in done.stderr
