"""The gateway in pool mode over two real vLLM CPU servers, with two gateway workers.

Requests for two tunes settle on servers already holding their tune; one server is killed under
load and no request sent after that fails; it is started again and rejoins the pool. Metrics
from both gateway workers add up on one scrape.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gateway.auth import new_key
from gateway.demo_pool import stop_servers, vllm_server_command, vllm_server_env
from gateway.settings import EngineSettings
from loadtests.background import run_in_background
from tests.e2e.conftest import BUILD, ROOT, free_port, gateway_process, write_setup
from tests.prom import Samples, samples, total

pytestmark = pytest.mark.e2e
UPSTREAM_KEY = "upstream-" + new_key()


class VLLMServer:
    def __init__(self, root: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = vllm_server_command(EngineSettings(model_path=BUILD / "base"), self.port)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=vllm_server_env(UPSTREAM_KEY),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run_in_background(self.proc.pid)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"vLLM server not ready:\n{self.tail()}")

    def kill(self) -> None:
        """A crash: the server and everything it started, at once."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@contextmanager
def vllm_servers(root: Path, n: int) -> Iterator[list[VLLMServer]]:
    servers = [VLLMServer(root, f"vllm-{i}") for i in range(n)]
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        # SIGTERM: vLLM stops its engine and unlinks its shared memory (`/dev/shm`), which a
        # SIGKILL of the whole group leaves behind (killed only if it takes too long)
        stop_servers([s.proc for s in servers if s.proc is not None])


def scrape(url: str) -> Samples:
    return samples(httpx.get(f"{url}/metrics", timeout=30).text)


def test_pool_affinity_failover_and_rejoin(demo_build, tmp_path):
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(tmp_path, keys)
    with vllm_servers(tmp_path, 2) as servers:
        env = {
            "TUNEGATE_ENGINE__KIND": "pool",
            "TUNEGATE_ENGINE__POOL_URLS": json.dumps([s.url for s in servers]),
            "TUNEGATE_ENGINE__UPSTREAM_API_KEY": UPSTREAM_KEY,
            "TUNEGATE_ENGINE__POOL_HEALTH_INTERVAL_S": "0.5",
            "TUNEGATE_ENGINE__POOL_SATURATION": "3",  # a restarted server soon gets work
            "TUNEGATE_WORKERS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        }
        with gateway_process(tmp_path, tunes, policies, keys, new_key(), env, "pool") as gw:
            client = httpx.Client(timeout=120)

            def ask(i: int, stream: bool = False) -> int:
                body = {
                    "model": "support" if i % 2 else "legal",
                    "max_tokens": 6,
                    "stream": stream,
                    "user": f"u{i}",
                    "messages": [{"role": "user", "content": "Where is my package?"}],
                }
                r = client.post(f"{gw.url}/v1/chat/completions", headers=gw.headers(), json=body)
                if r.status_code == 200 and stream:
                    assert r.text.rstrip().endswith("[DONE]"), r.text[-300:]
                if r.status_code != 200:
                    errors.append(r.text[:300])
                return r.status_code

            errors: list[str] = []

            # Affinity: two tunes, four at a time.
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(ask, range(60)))
            assert codes == [200] * 60, (errors[:3], gw.log_tail(30))
            m = scrape(gw.url)
            routes = total(m, "tunegate_pool_routes_total")
            hits = total(m, "tunegate_pool_routes_total", affinity="hit")
            assert routes >= 60 and hits / routes >= 0.9, (hits, routes)
            # Both workers answered, and their counts add up on one scrape.
            served = total(m, "tunegate_requests_total", route="chat", status="2xx")
            assert served == 60

            # Kill one server under load: nothing sent after the kill fails.
            stop = threading.Event()
            after: list[int] = []
            killed_at = [0.0]

            def traffic(worker: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    sent = time.monotonic()
                    code = ask(worker * 1000 + i, stream=i % 2 == 0)
                    if killed_at[0] and sent > killed_at[0] + 0.05:
                        after.append(code)

            threads = [threading.Thread(target=traffic, args=(w,)) for w in range(3)]
            for t in threads:
                t.start()
            time.sleep(3)
            servers[0].kill()
            killed_at[0] = time.monotonic()
            time.sleep(8)
            stop.set()
            for t in threads:
                t.join()
            assert after and all(c == 200 for c in after), after
            state = client.get(f"{gw.url}/admin/engine", headers=gw.admin_headers).json()
            assert state["ready"] is True

            # Start it again: it rejoins and takes requests.
            servers[0].start()
            servers[0].wait_ready()
            label = servers[0].url.removeprefix("http://")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                m = scrape(gw.url)
                if total(m, "tunegate_pool_server_healthy", server=label) >= 1:
                    break
                time.sleep(0.5)
            assert total(m, "tunegate_pool_server_healthy", server=label) >= 1
            before = total(m, "tunegate_pool_routes_total", server=label)
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(ask, range(40)))
            assert codes == [200] * 40
            m = scrape(gw.url)
            assert total(m, "tunegate_pool_routes_total", server=label) > before
            text = httpx.get(f"{gw.url}/metrics").text + gw.log_path.read_text(errors="replace")
            assert UPSTREAM_KEY not in text
            client.close()
