"""Refusals at the door, through the real server: a gateway process at its bound of requests in
flight answers completion requests 503 from its HTTP protocol, with the status, body and headers
the app would give, and the connection stays in step for what comes after.

The gateway runs over a mock vLLM server (the pool engine): a refusal never reaches the engine,
and the mock starts in a second. One request holds the only slot: its client has sent the
headers and half the body, so the gateway has taken it in and waits for the rest.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth import new_key
from tests.e2e.conftest import ROOT, LiveGateway, free_port, gateway_process, write_setup

CHAT = {"model": "support", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
PAYLOAD = json.dumps(CHAT).encode()
OVERLOADED = {
    "error": {
        "message": "The gateway is at capacity; try again shortly.",
        "type": "service_unavailable_error",
        "param": None,
        "code": "overloaded",
    }
}


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "loadtests/mock_vllm.py", "--port", str(port), "--tokens", "4"]
    proc = subprocess.Popen([*cmd, "--api-key", "up-key"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "mock did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def one_slot(demo_build: Path, mock_upstream: str, tmp_path_factory) -> Iterator[LiveGateway]:
    root = tmp_path_factory.mktemp("door")
    keys = {"acme": new_key(), "narrow": new_key()}
    tunes, policies = write_setup(root, keys)
    env = {
        "TUNEGATE_ENGINE__KIND": "pool",
        "TUNEGATE_ENGINE__POOL_URLS": json.dumps([mock_upstream]),
        "TUNEGATE_ENGINE__UPSTREAM_API_KEY": "up-key",
        "TUNEGATE_MAX_INFLIGHT": "1",
    }
    with gateway_process(root, tunes, policies, keys, new_key(), env, name="door") as gw:
        yield gw


def connect(gw: LiveGateway) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def request(gw: LiveGateway, path: str = "/v1/chat/completions", *, body: bytes = PAYLOAD,
            extra: str = "", method: str = "POST", version: str = "1.1") -> bytes:  # fmt: skip
    head = (
        f"{method} {path} HTTP/{version}\r\nHost: gw\r\n"
        f"Authorization: Bearer {gw.keys['acme']}\r\n{extra}"
    )
    if method != "GET":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (b"" if method == "GET" else body)


def read_response(
    s: socket.socket, buf: bytearray, to_head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One response from the socket (`buf` keeps what came after it); `to_head`: to a HEAD."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-response: {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"header {name} twice"
        headers[name.lower()] = value.strip()
    size = 0 if to_head else int(headers["content-length"])
    while len(rest) < size:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    buf[:] = rest[size:]
    return status, headers, rest[:size]


class Holder:
    """A completion request taken in and waiting for the rest of its body."""

    def __init__(self, gw: LiveGateway) -> None:
        self.sock = connect(gw)
        self.sock.sendall(request(gw)[: -len(PAYLOAD) // 2])
        deadline = time.monotonic() + 30
        while httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=gw.headers(),
                         timeout=30).status_code != 503:  # fmt: skip
            assert time.monotonic() < deadline, gw.log_tail()
            time.sleep(0.05)

    def release(self) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(PAYLOAD[-len(PAYLOAD) // 2 :])
        answer = read_response(self.sock, bytearray())
        self.sock.close()
        return answer


def closed(s: socket.socket, gw: LiveGateway) -> bool:
    """The server closed the connection: a request sent after gets no answer."""
    try:
        s.sendall(request(gw, "/v1/models", method="GET"))
        answer = s.recv(1024)
    except ConnectionError:
        answer = b""
    s.close()
    return answer == b""


def metric(gw: LiveGateway, prefix: str) -> float:
    text = httpx.get(f"{gw.url}/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


REFUSED = 'tunegate_rate_limited_total{reason="overloaded",tenant=""}'


def test_refused_at_the_door_as_the_app_would_answer(one_slot: LiveGateway) -> None:
    gw = one_slot
    # below the bound, the same request is served
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=gw.headers(), timeout=30)
    assert r.status_code == 200, r.text
    holder = Holder(gw)
    before = metric(gw, REFUSED)
    s = connect(gw)
    buf = bytearray()
    s.sendall(request(gw, extra="X-Request-Id: my-trace.01\r\n"))
    status, headers, body = read_response(s, buf)
    assert status == 503 and json.loads(body) == OVERLOADED
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "1" and headers["x-request-id"] == "my-trace.01"
    assert headers["date"] and headers["server"] == "uvicorn"
    assert "connection" not in headers  # kept alive
    # an id not safe to echo is replaced; the other completion route is refused too, with a
    # body that is not even JSON (never read)
    s.sendall(request(gw, "/v1/completions", body=b"{not json", extra="X-Request-Id: a b\r\n"))
    status, headers, body = read_response(s, buf)
    assert status == 503 and json.loads(body) == OVERLOADED
    assert len(headers["x-request-id"]) == 32 and headers["x-request-id"] != "a b"
    # a HEAD is refused with the length of the answer but not its body
    s.sendall(request(gw, method="HEAD") + request(gw, extra="X-Request-Id: after-head\r\n"))
    status, headers, body = read_response(s, buf, to_head=True)
    assert status == 503 and int(headers["content-length"]) > 0
    status, headers, body = read_response(s, buf)
    assert (status, headers["x-request-id"]) == (503, "after-head")
    # pipelined in one write: a route the bound does not cover, a refusal with its body (queued
    # behind the first), the same route again, and a refusal that closes the connection; all
    # answered, in order
    models = request(gw, "/v1/models", method="GET")
    s.sendall(
        models
        + request(gw, extra="X-Request-Id: p2\r\n")
        + models
        + request(gw, extra="X-Request-Id: p4\r\nConnection: close\r\n")
    )
    status, headers, body = read_response(s, buf)
    assert status == 200 and any(m["id"] == "support" for m in json.loads(body)["data"])
    status, headers, body = read_response(s, buf)
    assert (status, headers["x-request-id"], json.loads(body)) == (503, "p2", OVERLOADED)
    status, headers, body = read_response(s, buf)
    assert status == 200 and "connection" not in headers
    status, headers, body = read_response(s, buf)
    assert (status, headers["x-request-id"], headers["connection"]) == (503, "p4", "close")
    assert closed(s, gw) and not buf

    # HTTP/1.0: no keep-alive
    s = connect(gw)
    s.sendall(request(gw, version="1.0"))
    status, headers, _ = read_response(s, bytearray())
    assert status == 503 and headers["connection"] == "close" and closed(s, gw)

    # a connection idle after a refusal is closed after uvicorn's keep-alive timeout (5 s)
    s = connect(gw)
    s.sendall(request(gw))
    assert read_response(s, bytearray())[0] == 503
    assert s.recv(1024) == b""
    s.close()
    assert metric(gw, REFUSED) == before + 8
    # the held request goes on when its body comes, and the slot is free again afterwards
    status, _, body = holder.release()
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=gw.headers(), timeout=30)
    assert r.status_code == 200, r.text


def test_every_refusal_has_its_audit_record(one_slot: LiveGateway) -> None:
    gw = one_slot
    holder = Holder(gw)
    rid = f"audit-{new_key()[-12:]}"
    with httpx.Client(timeout=30) as c:
        r = c.post(f"{gw.url}/v1/completions", json={"model": "support", "prompt": "hi"},
                   headers={**gw.headers(), "X-Request-Id": rid})  # fmt: skip
    assert r.status_code == 503
    holder.release()
    audit = Path(gw.env["TUNEGATE_AUDIT_DIR"])
    deadline = time.monotonic() + 30
    while True:
        records = [json.loads(line) for p in audit.glob("*.jsonl")
                   for line in p.read_text().splitlines()]  # fmt: skip
        mine = [r for r in records if r["request_id"] == rid]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(r["route"], r["status"], r["code"], r["decision"], r["tenant"]) for r in mine] == [
        ("completions", 503, "overloaded", "failed", None)
    ]
